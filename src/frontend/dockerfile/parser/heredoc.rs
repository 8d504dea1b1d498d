//! Recognising heredoc words (`<<EOF`, `<<-EOF`, `3<<'EOF'`, `<<"EOF"`) in a `RUN`/`COPY`/`ADD`
//! line. The bodies are read by the line loop in `mod.rs`.

use super::Heredoc;
use crate::frontend::dockerfile::shell::Lexer;

/// Every heredoc word of `line`, in order. The line is split into words with quotes and escapes
/// kept and unset variables left alone (always with `\` as escape, as BuildKit does); a line
/// that does not lex (an unclosed quote) has no heredocs.
///
/// `<<` and the word must touch: in `RUN <<  EOF` they are two words and there is no heredoc,
/// as in the BuildKit parser the conformance corpus was produced with (BuildKit's Dockerfile
/// frontend 1.16 later glued `<<` to the following word across blanks).
pub(super) fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let lex = Lexer::new('\\')
        .raw_quotes(true)
        .raw_escapes(true)
        .skip_unset_env(true);
    let words = lex.process_words(line, &|_| None).unwrap_or_default();
    let mut docs = Vec::new();
    for word in words {
        if let Some(doc) = parse_heredoc(&word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Parses one word as a heredoc: `[fd]<<[-]WORD` where `WORD` is a single shell word without
/// `<`. The name is the word with quotes removed; quoting any part of it turns off expansion of
/// the body. `Ok(None)` when the word is not a heredoc.
///
/// No whitespace is allowed between `<<` and the word: `RUN <<  EOF` is a plain command here,
/// as in the BuildKit parser the conformance corpus was produced with (BuildKit's Dockerfile
/// frontend 1.16 later started accepting it).
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, String> {
    let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let Some(after) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match after.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, after),
    };
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    // An fd too large for a `uint` is 0, like Go's ignored ParseUint error.
    let file_descriptor = word[..digits].parse::<u32>().unwrap_or(0);

    let lex = Lexer::new('\\').skip_unset_env(true);
    let no_env = |_: &str| None;
    let words = lex
        .process_words(rest, &no_env)
        .map_err(|e| e.to_string())?;
    let [name] = words.as_slice() else {
        return Ok(None);
    };
    let raw = lex
        .raw_quotes(true)
        .process_words(rest, &no_env)
        .map_err(|e| e.to_string())?;
    let [raw_name] = raw.as_slice() else {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    };
    let quotes = |s: &str| s.chars().filter(|c| matches!(c, '\'' | '"')).count();
    Ok(Some(Heredoc {
        name: name.clone(),
        content: String::new(),
        expand: quotes(name) == quotes(raw_name),
        chomp,
        file_descriptor,
    }))
}

/// Removes the leading tabs of every line, what `<<-` asks for (BuildKit's parser keeps the
/// content as written; the instruction layer chomps).
pub fn chomp_heredoc_content(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(w: &str) -> Option<(String, bool, bool, u32)> {
        parse_heredoc(w)
            .unwrap()
            .map(|h| (h.name, h.expand, h.chomp, h.file_descriptor))
    }

    #[test]
    fn heredoc_words() {
        assert_eq!(doc("<<EOF"), Some(("EOF".into(), true, false, 0)));
        assert_eq!(doc("3<<-'E F'"), Some(("E F".into(), false, true, 3)));
        assert_eq!(doc("<<eo\\'f"), Some(("eo'f".into(), true, false, 0)));
        assert_eq!(doc("<<'e'o\\'f"), Some(("eo'f".into(), false, false, 0)));
        assert_eq!(doc("<<$EOF"), Some(("$EOF".into(), true, false, 0)));
        assert_eq!(doc("<<"), None);
        assert_eq!(doc("<<-"), None);
        assert_eq!(doc("<<a<b"), None);
        assert_eq!(doc("x<<EOF"), None);
        assert_eq!(doc("<<a b"), None);
    }

    #[test]
    fn buildkit_helper_cases() {
        for w in [
            "<<EOF",
            "<<'EOF'",
            "<<\"EOF\"",
            "<<-EOF",
            "<<-'EOF'",
            "<<-\"EOF\"",
            "<<EO\"F\"",
            "<< EOF",
            "<<- EOF",
        ] {
            assert_eq!(
                parse_heredoc(w).unwrap().map(|h| h.name).as_deref(),
                Some("EOF"),
                "{w}"
            );
        }
        for w in ["<<'EOF", "<<\"EOF", "<<EOF'", "<<EOF\""] {
            assert!(parse_heredoc(w).is_err(), "{w}");
        }
        for w in ["", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "<<EOF sh"] {
            assert_eq!(parse_heredoc(w).unwrap(), None, "{w}");
        }
    }

    #[test]
    fn heredocs_in_lines() {
        let names = |l: &str| -> Vec<String> {
            heredocs_from_line(l)
                .unwrap()
                .into_iter()
                .map(|h| h.name)
                .collect()
        };
        assert_eq!(names("RUN <<EOF <<EOF2"), ["EOF", "EOF2"]);
        assert_eq!(names("RUN 4<<-'EOF' x"), ["EOF"]);
        assert!(names("RUN '<<EOF'").is_empty());
        assert!(names("RUN \"<<EOF\"").is_empty());
        assert!(names("RUN <<  EOF").is_empty());
        assert!(names("RUN <<- EOF").is_empty());
        assert!(names("RUN <<'EOF").is_empty());
    }

    #[test]
    fn chomps_leading_tabs() {
        assert_eq!(chomp_heredoc_content("\t\ta\n\tb\n c\n"), "a\nb\n c\n");
    }
}
