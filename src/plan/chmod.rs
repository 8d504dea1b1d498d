//! `--chmod` of COPY/ADD: an octal mode, or a symbolic one in chmod(1) syntax (`u+x`,
//! `g-w,o=r`, `a=rX`, `go=u-w`) applied to each entry's own mode, as BuildKit's Dockerfile
//! frontend accepts (it parses with a port of BSD `setmode`, umask 0). Pure: parsed by the
//! frontends, applied by `exec`.

use serde::Serialize;

/// A parsed `--chmod` value. Serialises as written (octal as its number), so octal values
/// keep the cache keys they had before symbolic modes existed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// The mode of every file and directory.
    Octal(u32),
    /// Changes applied to each entry's own mode, in order.
    Symbolic { text: String, actions: Vec<Action> },
}

/// One operator of a clause with what follows it: `g+rw`, `o=u`, `+X`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// Bits the clause's `ugoa` letters select (`a` when none are written).
    who: u32,
    op: Op,
    /// `rwxst` as bits, before masking by `who`.
    perm: u32,
    /// `X`: execute/search, only for directories and files that are executable already.
    search: bool,
    /// `u`, `g`, `o` on the right of the operator: copy that class's current bits.
    copy: Vec<Class>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Remove,
    Set,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    User,
    Group,
    Other,
}

impl Class {
    fn shift(self) -> u32 {
        match self {
            Class::User => 6,
            Class::Group => 3,
            Class::Other => 0,
        }
    }
}

const SET_ID: u32 = 0o6000;
const STICKY: u32 = 0o1000;
/// What `a` (or no `ugoa` letter) selects; sticky only when `t` is written.
const ALL: u32 = 0o6777;

impl Chmod {
    /// Parses what `--chmod=` gave. Octal must be at most 07777.
    pub fn parse(s: &str) -> Result<Chmod, String> {
        if s.starts_with(|c: char| c.is_ascii_digit()) {
            return u32::from_str_radix(s, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(Chmod::Octal)
                .ok_or_else(|| {
                    format!("invalid chmod parameter: '{s}'. it should be octal string and between 0 and 07777")
                });
        }
        let bad = || {
            format!(
                "invalid chmod parameter: '{s}'. it should be an octal mode such as 755 or a symbolic one such as u+x,go-w"
            )
        };
        let mut actions = Vec::new();
        for clause in s.split(',') {
            let mut chars = clause.chars().peekable();
            let mut who = 0;
            while let Some(c) = chars.peek() {
                who |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o0007,
                    'a' => ALL,
                    _ => break,
                };
                chars.next();
            }
            let mut clause_actions = 0;
            while let Some(c) = chars.next() {
                let op = match c {
                    '+' => Op::Add,
                    '-' => Op::Remove,
                    '=' => Op::Set,
                    _ => return Err(bad()),
                };
                let mut a = Action {
                    who,
                    op,
                    perm: 0,
                    search: false,
                    copy: Vec::new(),
                };
                while let Some(&c) = chars.peek() {
                    // BSD setmode ignores set-id and sticky for `o` alone.
                    let others_only = who != 0 && who & !0o7 == 0;
                    match c {
                        'r' => a.perm |= 0o444,
                        'w' => a.perm |= 0o222,
                        'x' => a.perm |= 0o111,
                        'X' => a.search = true,
                        's' if !others_only => a.perm |= SET_ID,
                        't' if !others_only => {
                            a.perm |= STICKY;
                            a.who |= if who == 0 { 0 } else { STICKY };
                        }
                        's' | 't' => {}
                        'u' => a.copy.push(Class::User),
                        'g' => a.copy.push(Class::Group),
                        'o' => a.copy.push(Class::Other),
                        '+' | '-' | '=' => break,
                        _ => return Err(bad()),
                    }
                    chars.next();
                }
                actions.push(a);
                clause_actions += 1;
            }
            if clause_actions == 0 {
                return Err(bad());
            }
        }
        Ok(Chmod::Symbolic {
            text: s.to_string(),
            actions,
        })
    }

    /// The new permission bits (07777) of an entry whose mode is `mode`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let actions = match self {
            Chmod::Octal(m) => return *m,
            Chmod::Symbolic { actions, .. } => actions,
        };
        let original = mode & 0o7777;
        let mut m = original;
        for a in actions {
            let who = if a.who == 0 {
                ALL | (a.perm & STICKY)
            } else {
                a.who
            };
            let mut bits = a.perm;
            // `-X` clears execute bits like `-x`; `+X`/`=X` add them only where it makes sense.
            if a.search && (a.op == Op::Remove || is_dir || original & 0o111 != 0) {
                bits |= 0o111;
            }
            for c in &a.copy {
                let v = (m >> c.shift()) & 0o7;
                bits |= v << 6 | v << 3 | v;
            }
            let bits = bits & who;
            match a.op {
                Op::Add => m |= bits,
                Op::Remove => m &= !bits,
                Op::Set => m = (m & !who) | bits,
            }
        }
        m
    }
}

impl Serialize for Chmod {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Chmod::Octal(m) => s.serialize_u32(*m),
            Chmod::Symbolic { text, .. } => s.serialize_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(s: &str, mode: u32, is_dir: bool) -> u32 {
        Chmod::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .apply(mode, is_dir)
    }

    #[test]
    fn octal_modes_replace_the_mode() {
        assert_eq!(Chmod::parse("755"), Ok(Chmod::Octal(0o755)));
        assert_eq!(Chmod::parse("0640"), Ok(Chmod::Octal(0o640)));
        assert_eq!(apply("4755", 0o644, false), 0o4755);
        assert_eq!(apply("600", 0o755, true), 0o600);
        for bad in ["17777", "789", "9"] {
            let e = Chmod::parse(bad).unwrap_err();
            assert!(e.contains("between 0 and 07777"), "{bad}: {e}");
        }
    }

    #[test]
    fn symbolic_modes_change_each_entry() {
        assert_eq!(apply("u+x", 0o644, false), 0o744);
        assert_eq!(apply("+x", 0o644, false), 0o755);
        assert_eq!(apply("g-w,o=r", 0o664, false), 0o644);
        assert_eq!(apply("go-w", 0o777, true), 0o755);
        assert_eq!(apply("a=r", 0o755, false), 0o444);
        assert_eq!(apply("u=rwx,go=", 0o644, false), 0o700);
        assert_eq!(apply("ug=rw,o-rwx", 0o755, false), 0o660);
        assert_eq!(apply("u+s,g+s", 0o755, false), 0o6755);
        assert_eq!(apply("+t", 0o755, true), 0o1755);
        assert_eq!(apply("o+t", 0o755, true), 0o755, "o alone ignores sticky");
        assert_eq!(apply("=", 0o4755, false), 0);
    }

    #[test]
    fn capital_x_is_for_directories_and_executables() {
        assert_eq!(apply("a=rX", 0o600, false), 0o444);
        assert_eq!(apply("a=rX", 0o700, false), 0o555);
        assert_eq!(apply("a=rX", 0o700, true), 0o555);
        assert_eq!(apply("go+X", 0o600, true), 0o611);
        assert_eq!(apply("a-X", 0o755, true), 0o644);
        // X looks at the mode before the change, like chmod(1).
        assert_eq!(apply("a-x,a+X", 0o755, false), 0o755);
    }

    #[test]
    fn classes_copy_from_each_other() {
        assert_eq!(apply("g=u", 0o740, false), 0o770);
        assert_eq!(apply("go=u-w", 0o755, false), 0o755);
        assert_eq!(apply("go=u-w", 0o644, false), 0o644);
        assert_eq!(apply("o=g", 0o751, false), 0o755);
        assert_eq!(apply("u+w,g=u", 0o444, false), 0o664);
    }

    #[test]
    fn malformed_modes_are_rejected() {
        for bad in [
            "", "u", "u+y", "x+u", "u+x,", ",u+x", "u+x,,g+w", "rwx", "--chmod",
        ] {
            assert!(Chmod::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn serialises_as_written() {
        assert_eq!(serde_json::to_string(&Chmod::Octal(0o755)).unwrap(), "493");
        assert_eq!(
            serde_json::to_string(&Chmod::parse("u+x").unwrap()).unwrap(),
            "\"u+x\""
        );
    }
}
