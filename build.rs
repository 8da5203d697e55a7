//! Embeds `bpftrace/traffic.bt` without its comments: the script's
//! documentation (what it measures, on which kernels, its caveats) is for
//! readers of the file, and 7 KiB of it in the binary counted against the
//! 1 MiB budget for routers. The file itself is installed unchanged.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=bpftrace/traffic.bt");
    let script = std::fs::read_to_string("bpftrace/traffic.bt").expect("bpftrace/traffic.bt");
    let out = std::env::var("OUT_DIR").expect("OUT_DIR");
    std::fs::write(Path::new(&out).join("traffic.bt"), without_comments(&script)).expect("write the embedded script");
}

/// The script with `/* */` and `//` comments and blank lines removed;
/// string literals (which may hold either) are kept as they are.
fn without_comments(script: &str) -> String {
    let mut code = String::with_capacity(script.len());
    let mut chars = script.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            code.push(c);
            match c {
                '\\' => code.extend(chars.next()),
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                code.push(c);
            }
            ('/', Some('*')) => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            ('/', Some('/')) => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            _ => code.push(c),
        }
    }
    let lines: Vec<&str> = code.lines().map(str::trim_end).filter(|line| !line.trim().is_empty()).collect();
    lines.join("\n") + "\n"
}
