//! `lade build --add-host NAME:IP` (docker's flag): names added to the `/etc/hosts` of every
//! RUN step. The file is bind-mounted from the step's bundle, so it never reaches a layer.
//!
//! The syntax is buildx's: `NAME:IP` or `NAME=IP`, an IPv6 address optionally in brackets
//! (`NAME=[::1]`, and `NAME:::1` splits at the first colon). The name is lowercased, as
//! BuildKit's Dockerfile frontend does. `host-gateway` (docker's gateway address of its bridge)
//! has no meaning without a daemon and is refused.

use std::net::IpAddr;

/// One `--add-host` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ExtraHost {
    pub name: String,
    pub ip: IpAddr,
}

impl ExtraHost {
    /// Parses `NAME:IP` or `NAME=IP`; the error is a sentence naming the value.
    pub fn parse(s: &str) -> Result<ExtraHost, String> {
        let bad = |why: &str| format!("--add-host {s:?}: {why}");
        let (name, ip) = s
            .split_once('=')
            .or_else(|| s.split_once(':'))
            .ok_or_else(|| bad("expected NAME:IP"))?;
        if name.is_empty() || ip.is_empty() {
            return Err(bad("expected NAME:IP"));
        }
        if name.chars().any(|c| c.is_whitespace() || c == '#') {
            return Err(bad("the name cannot hold spaces or `#`"));
        }
        if ip == "host-gateway" {
            return Err(bad(
                "host-gateway is docker's bridge gateway and lade runs no daemon: give the \
                 address (with the default network, the host is 127.0.0.1)",
            ));
        }
        let unbracketed = ip
            .strip_prefix('[')
            .and_then(|i| i.strip_suffix(']'))
            .unwrap_or(ip);
        let ip: IpAddr = unbracketed
            .parse()
            .map_err(|_| bad(&format!("{ip:?} is not an IP address")))?;
        Ok(ExtraHost {
            name: name.to_lowercase(),
            ip,
        })
    }
}

/// `/etc/hosts` of a RUN: loopback names and the hostname (BuildKit's), then `extra` in order.
pub fn hosts_file(hostname: &str, extra: &[ExtraHost]) -> String {
    let mut s =
        format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for h in extra {
        s.push_str(&format!("{}\t{}\n", h.ip, h.name));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> (String, String) {
        let h = ExtraHost::parse(s).unwrap();
        (h.name, h.ip.to_string())
    }

    #[test]
    fn docker_and_buildx_forms() {
        assert_eq!(ok("db:10.0.0.5"), ("db".into(), "10.0.0.5".into()));
        assert_eq!(ok("DB=10.0.0.5"), ("db".into(), "10.0.0.5".into()));
        assert_eq!(ok("v6=[2001:db8::1]"), ("v6".into(), "2001:db8::1".into()));
        assert_eq!(ok("v6:2001:db8::1"), ("v6".into(), "2001:db8::1".into()));
        assert_eq!(ok("v6:[::1]"), ("v6".into(), "::1".into()));
    }

    #[test]
    fn bad_values_name_themselves() {
        for (value, part) in [
            ("db", "expected NAME:IP"),
            (":1.2.3.4", "expected NAME:IP"),
            ("db:", "expected NAME:IP"),
            ("db:example.com", "not an IP address"),
            ("db:1.2.3", "not an IP address"),
            ("a b:1.2.3.4", "spaces"),
            ("gw:host-gateway", "host-gateway"),
        ] {
            let e = ExtraHost::parse(value).unwrap_err();
            assert!(
                e.contains(&format!("{value:?}")) && e.contains(part),
                "{value}: {e}"
            );
        }
    }

    #[test]
    fn hosts_lines_follow_the_defaults_in_order() {
        let extra = [
            ExtraHost::parse("db:10.0.0.5").unwrap(),
            ExtraHost::parse("v6=[2001:db8::1]").unwrap(),
        ];
        assert_eq!(
            hosts_file("buildkitsandbox", &extra),
            "127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             10.0.0.5\tdb\n2001:db8::1\tv6\n"
        );
    }
}
