//! USER of a RUN step resolved against the stage's own `/etc/passwd` and `/etc/group`, with
//! runc's `GetExecUser` rules (which BuildKit uses): a name must exist in passwd; a numeric uid
//! works without an entry (gid 0, HOME `/`); supplementary groups are the groups that list the
//! user's name, and only when no group was given.

/// The identity a RUN process gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// From passwd; `/` when the user has no entry.
    pub home: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
}

struct Passwd<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = Passwd<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || l.starts_with('#') {
            return None;
        }
        Some(Passwd {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f.get(5).copied().unwrap_or(""),
        })
    })
}

struct Group<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn group_entries(text: &str) -> impl Iterator<Item = Group<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 3 || l.starts_with('#') {
            return None;
        }
        Some(Group {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f
                .get(3)
                .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
        })
    })
}

/// Resolves `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`, …) against the contents of
/// the stage's passwd and group files (`None` when the file does not exist).
pub fn resolve_user(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, UserError> {
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, g),
        None => (spec, ""),
    };
    let user_arg = if user_arg.is_empty() { "0" } else { user_arg };
    let numeric_uid: Option<u32> = user_arg.parse().ok();
    let entry = passwd.and_then(|p| {
        passwd_entries(p)
            .find(|e| match numeric_uid {
                Some(uid) => e.uid == uid,
                None => e.name == user_arg,
            })
            .map(|e| (e.name.to_string(), e.uid, e.gid, e.home.to_string()))
    });
    let (name, uid, mut gid, home) = match (entry, numeric_uid) {
        (Some((n, u, g, h)), _) => (Some(n), u, g, h),
        (None, Some(uid)) => (None, uid, 0, "/".to_string()),
        (None, None) => return Err(UserError::NoUser(user_arg.to_string())),
    };
    let home = if home.is_empty() { "/".into() } else { home };
    let mut additional_gids = Vec::new();
    if !group_arg.is_empty() {
        gid = match group_arg.parse::<u32>() {
            Ok(g) => g,
            Err(_) => group
                .and_then(|g| group_entries(g).find(|e| e.name == group_arg))
                .map(|e| e.gid)
                .ok_or_else(|| UserError::NoGroup(group_arg.to_string()))?,
        };
    } else if let (Some(name), Some(g)) = (&name, group) {
        for e in group_entries(g) {
            if e.members.contains(&name.as_str()) && !additional_gids.contains(&e.gid) {
                additional_gids.push(e.gid);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # comment\n\
        app:x:1000:1000::/home/app:/bin/sh\n\
        nohome:x:1001:1001::\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:app,other\napp:x:1000:\naudio:x:29:app\n";

    fn r(spec: &str) -> Result<ResolvedUser, UserError> {
        resolve_user(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn empty_is_root_with_roots_home() {
        let u = r("").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
        assert!(u.additional_gids.is_empty());
    }

    #[test]
    fn name_gets_primary_group_home_and_supplementary_groups() {
        let u = r("app").unwrap();
        assert_eq!(
            u,
            ResolvedUser {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![10, 29],
                home: "/home/app".into()
            }
        );
    }

    #[test]
    fn numeric_uid_uses_its_entry_or_defaults() {
        assert_eq!(r("1000").unwrap().home, "/home/app");
        let u = r("4242").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        let u = resolve_user("7", None, None).unwrap();
        assert_eq!((u.uid, u.gid), (7, 0));
    }

    #[test]
    fn explicit_group_replaces_primary_and_drops_supplementary() {
        let u = r("app:audio").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 29));
        assert!(u.additional_gids.is_empty());
        let u = r("4242:4343").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 4343));
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(r("nobody"), Err(UserError::NoUser("nobody".into())));
        assert_eq!(r("app:nogroup"), Err(UserError::NoGroup("nogroup".into())));
        assert_eq!(
            resolve_user("app", None, None),
            Err(UserError::NoUser("app".into()))
        );
    }

    #[test]
    fn empty_home_field_is_root_dir() {
        assert_eq!(r("nohome").unwrap().home, "/");
    }
}
