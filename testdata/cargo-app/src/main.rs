//! Prints what a TLS client would need from its image: the CA bundle named by SSL_CERT_FILE
//! (else the Debian path), parsed as PEM, each certificate's DER checked to be a SEQUENCE;
//! and who it runs as.

use std::io::Read;

fn main() {
    let greeting = std::env::var("GREETING").unwrap_or_default();
    println!("{greeting}");
    let path = std::env::var("SSL_CERT_FILE")
        .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
    let mut pem = String::new();
    std::fs::File::open(&path)
        .and_then(|mut f| f.read_to_string(&mut pem))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut certs = 0;
    let mut body = String::new();
    let mut inside = false;
    for line in pem.lines() {
        match line.trim() {
            "-----BEGIN CERTIFICATE-----" => {
                inside = true;
                body.clear();
            }
            "-----END CERTIFICATE-----" => {
                inside = false;
                let der = base64(&body).expect("certificate body is base64");
                assert_eq!(der.first(), Some(&0x30), "a certificate is a DER SEQUENCE");
                certs += 1;
            }
            l if inside => body.push_str(l),
            _ => {}
        }
    }
    assert!(certs > 0, "no certificate in {path}");
    println!("trusted roots: {certs}");
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("?");
    println!("uid: {uid}");
}

fn base64(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        let take = chunk.len().saturating_sub(1);
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    Some(out)
}
