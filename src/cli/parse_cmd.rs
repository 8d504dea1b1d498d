//! `lade parse`: print a Dockerfile's syntax tree, as JSON (one object per instruction) or in
//! BuildKit's parser-test dump format.

use super::args::{ParseArgs, ParseFormat};
use super::EXIT_FAILURE;
use crate::frontend::dockerfile::parser;
use anyhow::Context;
use std::io::{Read, Write};
use std::process::ExitCode;

pub fn run(args: &ParseArgs) -> anyhow::Result<ExitCode> {
    let (name, bytes) = if args.file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading the Dockerfile from standard input")?;
        ("<stdin>".to_string(), buf)
    } else {
        let bytes = std::fs::read(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?;
        (args.file.display().to_string(), bytes)
    };
    // BuildKit works on bytes; invalid UTF-8 only ever appears inside values, where the
    // replacement character is as good as the original byte for printing a tree.
    let src = String::from_utf8_lossy(&bytes);
    let df = match parser::parse(&src) {
        Ok(df) => df,
        Err(e) => {
            eprint!("{}", e.render(&name, &src));
            return Ok(ExitCode::from(EXIT_FAILURE));
        }
    };
    for w in &df.warnings {
        eprintln!("warning: {name}:{}: {}", w.line, w.message);
    }
    let out = match args.format {
        ParseFormat::Json => serde_json::to_string_pretty(&df.to_json())?,
        ParseFormat::Dump => df.dump(),
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{out}")?;
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}
