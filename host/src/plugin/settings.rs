//! A replica's settings against the ones its plugin declares (contract
//! 0.2.0, decision 34): what the plugin is given, what is worth a warning,
//! and what stops the replica from opening.

use super::bindings::Setting;

/// Settings the host reads for any plugin with multipart uploads
/// (`store::UploadTuning`): never warned about, passed only to a plugin
/// that declares them.
pub const HOST_SETTINGS: &[&str] = &["part-size", "concurrency"];

/// The settings a plugin is given, without the checks and warnings of
/// `check` (for what else the settings decide, such as the allowlist).
pub fn passed(declared: Option<&[Setting]>, given: &[(String, String)]) -> Vec<(String, String)> {
    match declared {
        None => given.to_vec(),
        Some(d) => given.iter().filter(|(k, _)| d.iter().any(|s| s.name == *k)).cloned().collect(),
    }
}

/// The outcome of a successful check.
#[derive(Debug, PartialEq)]
pub struct Checked {
    /// What the plugin receives.
    pub settings: Vec<(String, String)>,
    /// One line each, for the log.
    pub warnings: Vec<String>,
}

/// Check `given` against `declared` (`None` for a plugin of contract
/// 0.1.0, which declares nothing and is given everything, as before).
/// `url` is the replica URL, whose query may carry declared settings.
pub fn check(declared: Option<&[Setting]>, url: &str, given: Vec<(String, String)>) -> Result<Checked, String> {
    let Some(declared) = declared else {
        return Ok(Checked { settings: given, warnings: Vec::new() });
    };
    let known = |k: &str| declared.iter().any(|d| d.name == k);
    let query: Vec<(String, String)> =
        url::Url::parse(url).map(|u| u.query_pairs().into_owned().collect()).unwrap_or_default();
    let mut warnings = Vec::new();
    let mut unknown: Vec<&str> = Vec::new();
    for (k, _) in given.iter().filter(|(k, _)| !known(k) && !HOST_SETTINGS.contains(&k.as_str())) {
        if !unknown.contains(&k.as_str()) {
            unknown.push(k);
        }
    }
    if !unknown.is_empty() {
        let reads = declared.iter().map(|d| d.name.as_str()).collect::<Vec<_>>();
        let reads = if reads.is_empty() { "none".to_string() } else { reads.join(", ") };
        warnings.push(format!(
            "setting{} `{}` not passed: the plugin reads no such setting (it reads: {reads}); check the spelling",
            if unknown.len() > 1 { "s" } else { "" },
            unknown.join("`, `"),
        ));
    }
    for s in declared.iter().filter(|s| s.secret && query.iter().any(|(k, _)| *k == s.name)) {
        warnings.push(format!(
            "secret setting `{}` is given in the replica URL, which reaches logs and shell histories: \
             set it in the config file or with -s instead",
            s.name
        ));
    }
    let present = |name: &str| given.iter().chain(query.iter()).any(|(k, v)| k == name && !v.is_empty());
    if let Some(missing) = declared.iter().find(|s| s.required && !present(&s.name)) {
        let name = &missing.name;
        return Err(format!(
            "the plugin needs setting `{name}` ({}): set `{name}:` in the replica's config, `?{name}=` in its URL, \
             or `-s {name}=VALUE`",
            missing.description
        ));
    }
    Ok(Checked { settings: passed(Some(declared), &given), warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> Vec<Setting> {
        let s = |name: &str, secret, required| Setting { name: name.into(), description: "d".into(), secret, required };
        vec![s("region", false, false), s("token", true, true), s("part-size", false, false)]
    }

    fn given(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_plugin_gets_only_what_it_declares_and_a_typo_is_named() {
        let d = declared();
        let c = check(Some(&d), "x://b/p", given(&[("token", "t"), ("regoin", "eu"), ("access-key-id", "A")])).unwrap();
        assert_eq!(c.settings, given(&[("token", "t")]));
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("`regoin`, `access-key-id` not passed"), "{}", c.warnings[0]);
        assert!(c.warnings[0].contains("it reads: region, token, part-size"), "{}", c.warnings[0]);
    }

    #[test]
    fn host_settings_are_not_warned_about_and_reach_only_plugins_declaring_them() {
        let none: Vec<Setting> = Vec::new();
        let c = check(Some(&none), "x://b/p", given(&[("part-size", "5"), ("concurrency", "2")])).unwrap();
        assert_eq!((c.settings.len(), c.warnings.len()), (0, 0));
        let d = declared();
        let c = check(Some(&d), "x://b/p?token=q", given(&[("part-size", "5"), ("concurrency", "2")])).unwrap();
        assert_eq!(c.settings, given(&[("part-size", "5")]));
    }

    #[test]
    fn a_missing_required_setting_refuses_and_the_url_query_can_carry_it() {
        let d = declared();
        let err = check(Some(&d), "x://b/p", given(&[("token", "")])).unwrap_err();
        assert!(err.contains("needs setting `token` (d)") && err.contains("-s token=VALUE"), "{err}");
        let c = check(Some(&d), "x://b/p?token=abc", Vec::new()).unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("secret setting `token` is given in the replica URL")), "{c:?}");
    }

    #[test]
    fn a_plugin_of_the_first_contract_gets_everything_unchecked() {
        let all = given(&[("anything", "x"), ("token", "")]);
        assert_eq!(check(None, "x://b/p", all.clone()).unwrap(), Checked { settings: all, warnings: Vec::new() });
    }
}
