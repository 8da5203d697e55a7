//! The Prometheus text exposition format 0.0.4, the parts every collector
//! shares: a metric's definition (name, type, help: one source of truth),
//! its `# HELP`/`# TYPE` header, samples, escaped label values and integers
//! written without the formatting machinery. Collectors decide what to
//! write; this module decides how it is written.

use std::fmt::Write;
use crate::ip_text::push_u64;

pub struct Metric {
    pub name: &'static str,
    pub kind: &'static str,
    pub help: &'static str,
}

pub fn header(out: &mut String, metric: &Metric) {
    let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {}", metric.name, metric.help, metric.name, metric.kind);
}

pub fn sample(out: &mut String, metric: &Metric, value: u64) {
    header(out, metric);
    out.push_str(metric.name);
    out.push(' ');
    push_u64(out, value);
    out.push('\n');
}

/// A sample whose value is not a whole number (seconds, for instance).
pub fn sample_f64(out: &mut String, metric: &Metric, value: f64) {
    header(out, metric);
    let _ = writeln!(out, "{} {value}", metric.name);
}

/// `name="value"` with the value escaped as the exposition format requires:
/// backslash, double quote and newline.
pub fn label(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_in_full() {
        for n in [0, 7, 10, 1_234_567_890, u64::MAX] {
            let mut out = String::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string());
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        label(&mut out, "process", "a\\b\"c\nd 中国");
        assert_eq!(out, r#"process="a\\b\"c\nd 中国""#);
    }
}
