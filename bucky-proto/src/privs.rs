//! Running with less: dropping root after the sockets are bound (the original's uid and gid
//! keys) and lowering the scheduling priority (its nice key).

use std::ffi::CString;

use nix::unistd::{Gid, Group, Uid, User};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PrivError {
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    #[error("looking up {what} {name:?}: {source}")]
    Lookup {
        what: &'static str,
        name: String,
        source: nix::Error,
    },
    #[error("switching to uid {uid} gid {gid}: {call}: {source}")]
    Switch {
        uid: u32,
        gid: u32,
        call: &'static str,
        source: nix::Error,
    },
    #[error("nice({0}): {1}")]
    Nice(i32, std::io::Error),
}

/// The `uid` or `gid` setting: the flag if given, else the config key (a name, or a number
/// which the original also accepted), else none.
pub fn id_setting(
    flag: &Option<String>,
    cfg: &crate::config::Config,
    key: &str,
) -> Result<Option<String>, crate::config::ConfigError> {
    use crate::config::Value;
    if flag.is_some() {
        return Ok(flag.clone());
    }
    Ok(match cfg.raw(key) {
        None | Some(Value::None) => None,
        Some(Value::Int(n)) => Some(n.to_string()),
        Some(_) => cfg.get::<String>(key)?,
    })
}

/// A user given as a name or as digits (the original accepted both).
pub fn resolve_user(spec: &str) -> Result<User, PrivError> {
    let spec = spec.trim();
    let found = match spec.parse::<u32>() {
        Ok(n) => User::from_uid(Uid::from_raw(n)),
        Err(_) => User::from_name(spec),
    };
    match found {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(PrivError::UnknownUser(spec.into())),
        Err(source) => Err(PrivError::Lookup {
            what: "user",
            name: spec.into(),
            source,
        }),
    }
}

/// A group given as a name or as digits.
pub fn resolve_group(spec: &str) -> Result<Gid, PrivError> {
    let spec = spec.trim();
    if let Ok(n) = spec.parse::<u32>() {
        return Ok(Gid::from_raw(n));
    }
    match Group::from_name(spec) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(PrivError::UnknownGroup(spec.into())),
        Err(source) => Err(PrivError::Lookup {
            what: "group",
            name: spec.into(),
            source,
        }),
    }
}

/// Switches the whole process to `uid`/`gid` for good (real, effective and saved ids), with
/// the user's supplementary groups. Call it after binding privileged ports.
///
/// With only a user, the group is that user's primary group (the original kept the current
/// group, which left a daemon started as root in group 0). With neither, nothing happens.
pub fn drop_privileges(uid: Option<&str>, gid: Option<&str>) -> Result<(), PrivError> {
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    let user = uid.map(resolve_user).transpose()?;
    let gid = match (gid, &user) {
        (Some(g), _) => resolve_group(g)?,
        (None, Some(u)) => u.gid,
        (None, None) => Gid::current(),
    };
    let uid = user.as_ref().map_or_else(Uid::current, |u| u.uid);
    let fail = |call, source| PrivError::Switch {
        uid: uid.as_raw(),
        gid: gid.as_raw(),
        call,
        source,
    };
    if Uid::effective().is_root() {
        match &user {
            Some(u) => {
                let name = CString::new(u.name.as_bytes())
                    .map_err(|_| PrivError::UnknownUser(u.name.clone()))?;
                nix::unistd::initgroups(&name, gid).map_err(|e| fail("initgroups", e))?;
            }
            None => nix::unistd::setgroups(&[gid]).map_err(|e| fail("setgroups", e))?,
        }
    }
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| fail("setresgid", e))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| fail("setresuid", e))?;
    Ok(())
}

/// Adds `increment` to the process's niceness (children inherit it). Zero does nothing.
pub fn nice(increment: i32) -> Result<(), PrivError> {
    if increment == 0 {
        return Ok(());
    }
    rustix::process::nice(increment)
        .map(|_| ())
        .map_err(|e| PrivError::Nice(increment, e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_by_name_and_number() {
        assert_eq!(resolve_user("root").unwrap().uid, Uid::from_raw(0));
        assert_eq!(resolve_user("0").unwrap().name, "root");
        assert!(matches!(
            resolve_user("no-such-user-bucky"),
            Err(PrivError::UnknownUser(_))
        ));
        assert_eq!(resolve_group("0").unwrap(), Gid::from_raw(0));
        assert_eq!(resolve_group("root").unwrap(), Gid::from_raw(0));
        assert_eq!(
            resolve_group("no-such-group-bucky")
                .unwrap_err()
                .to_string(),
            "unknown group \"no-such-group-bucky\""
        );
    }

    #[test]
    fn ids_from_flags_and_config() {
        let cfg = crate::config::Config::parse_python("uid = 1000\ngid = 'staff'\n", "t").unwrap();
        assert_eq!(
            id_setting(&None, &cfg, "uid").unwrap().as_deref(),
            Some("1000")
        );
        assert_eq!(
            id_setting(&None, &cfg, "gid").unwrap().as_deref(),
            Some("staff")
        );
        let flag = Some("nobody".to_string());
        assert_eq!(id_setting(&flag, &cfg, "uid").unwrap(), flag);
        let none = crate::config::Config::parse_python("uid = None\n", "t").unwrap();
        assert_eq!(id_setting(&None, &none, "uid").unwrap(), None);
        let bad = crate::config::Config::parse_python("uid = [1]\n", "t").unwrap();
        assert!(id_setting(&None, &bad, "uid").is_err());
    }

    #[test]
    fn nothing_to_drop() {
        drop_privileges(None, None).unwrap();
        nice(0).unwrap();
    }
}
