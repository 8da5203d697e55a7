//! Embeds `bpftrace/traffic.bt` without its comments: the script's
//! documentation (what it measures, on which kernels, its caveats) is for
//! readers of the file, and 7 KiB of it in the binary counted against the
//! 1 MiB budget for routers. The file itself is installed unchanged.
//!
//! And writes the table of two-byte GBK codes (the 纯真 database's text)
//! that `src/location/gbk.rs` decodes with, taken from encoding_rs (the
//! WHATWG index): 47 KiB, where linking encoding_rs brought every legacy
//! encoding's tables and decoders, 141 KiB (Big5, Shift_JIS, EUC-KR, …).

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=bpftrace/traffic.bt");
    println!("cargo:rerun-if-changed=build.rs");
    let script = std::fs::read_to_string("bpftrace/traffic.bt").expect("bpftrace/traffic.bt");
    let out = std::env::var("OUT_DIR").expect("OUT_DIR");
    std::fs::write(Path::new(&out).join("traffic.bt"), without_comments(&script)).expect("write the embedded script");
    std::fs::write(Path::new(&out).join("gbk.bin"), gbk_table()).expect("write the GBK table");
}

/// Code point of every two-byte GBK code, lead 0x81..=0xFE by trail
/// 0x40..=0xFE (191 each), as little-endian u16; 0 for a code that maps to
/// nothing (trail 0x7F). Every one of them is in the Basic Multilingual Plane.
fn gbk_table() -> Vec<u8> {
    let mut table = Vec::with_capacity(126 * 191 * 2);
    for lead in 0x81u8..=0xFE {
        for trail in 0x40u8..=0xFE {
            let code = [lead, trail];
            let (text, had_errors) = encoding_rs::GBK.decode_without_bom_handling(&code);
            let mut chars = text.chars();
            let code = match (had_errors, chars.next(), chars.next()) {
                (false, Some(c), None) => u16::try_from(u32::from(c)).expect("GBK two-byte codes are in the BMP"),
                _ => 0,
            };
            table.extend(code.to_le_bytes());
        }
    }
    table
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
