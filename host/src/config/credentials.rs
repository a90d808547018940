//! Credentials a replica's config does not give, found as Litestream's AWS
//! SDK finds them: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (and
//! `AWS_SESSION_TOKEN`), then `LITESTREAM_*` (and `SLUICE_*`), then the
//! shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
//! `~/.aws/credentials`) under the profile `AWS_PROFILE` (else `default`).

use std::path::{Path, PathBuf};

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

/// Never prints the secret or the token.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ access_key_id: {:?}, .. }}", self.access_key_id)
    }
}

/// The environment's credentials (and emulator) for a store of `kind`
/// (its URL scheme) that `settings` do not give: Azure's and Google's; S3's
/// are `from_environment`, which has its own rule of precedence.
pub fn store_from_environment(kind: &str, url: &str, settings: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    match kind {
        "abs" => settings.extend(azure_from_environment(settings)),
        "gs" => gcs_from_environment(url, settings)?,
        "oss" => alibaba_from_environment(settings, |k| std::env::var(k).ok()),
        "sftp" | "nats" => read_named_files(kind, settings)?,
        _ => {}
    }
    Ok(())
}

/// Settings that name a file whose text a plugin needs (a plugin reads no
/// files): (store, setting naming the file, setting the text goes in,
/// what the file is).
const NAMED_FILES: &[(&str, &str, &str, &str)] =
    &[("sftp", "key-path", "key", "SSH private key"), ("nats", "creds", "creds-text", "NATS credentials file")];

/// The files a store of `kind`'s settings name, read and handed over as
/// their text (a text given already wins). A file that cannot be read is
/// an error naming it and the setting.
pub fn read_named_files(kind: &str, settings: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    for (_, path_key, text_key, what) in NAMED_FILES.iter().filter(|(k, ..)| *k == kind) {
        let named = settings.iter().rev().find(|(k, v)| k == path_key && !v.is_empty()).map(|(_, v)| v.clone());
        let Some(path) = named else { continue };
        if !settings.iter().any(|(k, v)| k == text_key && !v.is_empty()) {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read the {what} {path} ({path_key}): {e}"))?;
            settings.push((text_key.to_string(), text));
        }
        settings.retain(|(k, _)| k != path_key);
    }
    Ok(())
}

/// Azure's secrets a replica's config does not give, from Litestream's
/// variables: `LITESTREAM_AZURE_ACCOUNT_KEY`, else
/// `LITESTREAM_AZURE_SAS_TOKEN`.
fn azure_from_environment(settings: &[(String, String)]) -> Option<(String, String)> {
    let given = |k: &str| settings.iter().any(|(name, _)| name == k);
    if given("account-key") || given("sas-token") {
        return None;
    }
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    get("LITESTREAM_AZURE_ACCOUNT_KEY")
        .map(|key| ("account-key".to_string(), key))
        .or_else(|| get("LITESTREAM_AZURE_SAS_TOKEN").map(|token| ("sas-token".to_string(), token)))
}

/// Alibaba Cloud's keys a replica's config does not give, from its
/// variables: `ALIBABA_CLOUD_ACCESS_KEY_ID`, `ALIBABA_CLOUD_ACCESS_KEY_SECRET`
/// and `ALIBABA_CLOUD_SECURITY_TOKEN` (temporary credentials).
fn alibaba_from_environment(settings: &mut Vec<(String, String)>, env: impl Fn(&str) -> Option<String>) {
    if settings.iter().any(|(k, v)| k == "access-key-id" && !v.is_empty()) {
        return;
    }
    let vars = [
        ("access-key-id", "ALIBABA_CLOUD_ACCESS_KEY_ID"),
        ("secret-access-key", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
        ("session-token", "ALIBABA_CLOUD_SECURITY_TOKEN"),
    ];
    for (setting, var) in vars {
        if let Some(value) = env(var).filter(|v| !v.is_empty()) {
            settings.push((setting.to_string(), value));
        }
    }
}

/// Google Cloud Storage's settings a replica's config does not give, found
/// as Google's libraries find them (Application Default Credentials). The
/// plugin reads no files, so the host hands it the credentials file's text
/// as `credentials-json`:
/// - `STORAGE_EMULATOR_HOST` (`host:port`): the emulator is the
///   `endpoint` (unless one is given), and no credentials from the
///   environment go with it, as with Google's libraries.
/// - `credentials-json` given: kept; else `credentials-file`: read.
/// - else (no emulator) the file `GOOGLE_APPLICATION_CREDENTIALS` names,
///   else gcloud's `application_default_credentials.json` if it exists.
///
/// A named file that cannot be read is an error naming it.
fn gcs_from_environment(url: &str, settings: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    gcs_settings(url, settings, |k| std::env::var(k).ok(), gcloud_default_file)
}

/// `gcs_from_environment` with the environment and gcloud's file given.
fn gcs_settings(
    url: &str,
    settings: &mut Vec<(String, String)>,
    env: impl Fn(&str) -> Option<String>,
    gcloud_file: impl FnOnce() -> Option<PathBuf>,
) -> anyhow::Result<()> {
    let given = |settings: &[(String, String)], k: &str| settings.iter().any(|(name, v)| name == k && !v.is_empty());
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    let emulator = get("STORAGE_EMULATOR_HOST");
    if let Some(host) = &emulator
        && !given(settings, "endpoint")
    {
        settings.push(("endpoint".into(), host.clone()));
    }
    if given(settings, "credentials-json") {
        return Ok(());
    }
    let named = settings.iter().rev().find(|(k, v)| k == "credentials-file" && !v.is_empty());
    let file = match named.map(|(_, v)| PathBuf::from(v)) {
        Some(f) => Some(f),
        None if emulator.is_some() => None,
        None => get("GOOGLE_APPLICATION_CREDENTIALS").map(PathBuf::from).or_else(gcloud_file),
    };
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("cannot read the Google credentials file {}: {e}", path.display()))?;
        settings.retain(|(k, _)| k != "credentials-file");
        settings.push(("credentials-json".into(), text));
    } else if emulator.is_none()
        && !given(settings, "endpoint")
        && !names_endpoint(url)
        && !given(settings, "metadata-host")
    {
        // No key anywhere, and Google's own endpoint: the VM's account,
        // as Google's libraries fall back to (the plugin says so once if
        // no server answers). Another endpoint is an emulator or a proxy,
        // reached without credentials as before.
        let host = get("GCE_METADATA_HOST").unwrap_or_else(|| GCE_METADATA_HOST.to_string());
        settings.push(("metadata-host".into(), host));
    }
    Ok(())
}

/// Whether a replica URL's query names an endpoint (`?endpoint=`).
fn names_endpoint(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| u.query_pairs().any(|(k, v)| k == "endpoint" && !v.is_empty()))
}

/// Where a Google VM's metadata server answers (`GCE_METADATA_HOST`
/// overrides it, as for Google's libraries).
const GCE_METADATA_HOST: &str = "metadata.google.internal";

/// gcloud's own ADC file (`gcloud auth application-default login`).
fn gcloud_default_file() -> Option<PathBuf> {
    let dir = std::env::var_os("CLOUDSDK_CONFIG")
        .map(PathBuf::from)
        .or_else(|| dirs::home_dir().map(|h| h.join(".config/gcloud")))?;
    Some(dir.join("application_default_credentials.json")).filter(|p| p.exists())
}

/// From the environment or the shared file; `None` if neither has any.
/// A shared file that exists but cannot be read or parsed is an error
/// naming it (silently signing anonymously would fail later, obscurely).
pub fn from_environment() -> anyhow::Result<Option<Credentials>> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    for prefix in ["AWS", "LITESTREAM", "SLUICE"] {
        if let Some(id) = get(&format!("{prefix}_ACCESS_KEY_ID")) {
            let secret = get(&format!("{prefix}_SECRET_ACCESS_KEY"));
            let token = if prefix == "AWS" { get("AWS_SESSION_TOKEN") } else { None };
            return Ok(Some(Credentials { access_key_id: id, secret_access_key: secret, session_token: token }));
        }
    }
    let Some(file) = get("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from).or_else(default_file) else {
        return Ok(None);
    };
    let profile = get("AWS_PROFILE").unwrap_or_else(|| "default".into());
    shared_file(&file, &profile)
}

fn default_file() -> Option<PathBuf> {
    dirs::home_dir().map(|h| h.join(".aws/credentials")).filter(|p| p.exists())
}

/// The `profile` section of the shared credentials file at `path`.
pub fn shared_file(path: &Path, profile: &str) -> anyhow::Result<Option<Credentials>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => anyhow::bail!("cannot read the AWS credentials file {}: {e}", path.display()),
    };
    let ini = ini::Ini::load_from_str(&text)
        .map_err(|e| anyhow::anyhow!("the AWS credentials file {} is not valid INI: {e}", path.display()))?;
    let Some(section) = ini.section(Some(profile)) else { return Ok(None) };
    let get = |k: &str| section.get(k).map(str::trim).filter(|v| !v.is_empty()).map(String::from);
    Ok(get("aws_access_key_id").map(|id| Credentials {
        access_key_id: id,
        secret_access_key: get("aws_secret_access_key"),
        session_token: get("aws_session_token"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn named_files_reach_the_plugin_as_their_text() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("id_ed25519");
        std::fs::write(&file, "PRIVATE KEY TEXT").unwrap();
        let path = file.to_string_lossy().to_string();
        let mut settings = vec![pair("key-path", &path), pair("user", "u")];
        read_named_files("sftp", &mut settings).unwrap();
        assert_eq!(settings, [pair("user", "u"), pair("key", "PRIVATE KEY TEXT")]);
        let mut given = vec![pair("key", "INLINE"), pair("key-path", &path)];
        read_named_files("sftp", &mut given).unwrap();
        assert_eq!(given, [pair("key", "INLINE")], "a key given inline wins");
        let missing = dir.path().join("nope").to_string_lossy().to_string();
        let err = read_named_files("sftp", &mut vec![pair("key-path", &missing)]).unwrap_err().to_string();
        assert!(err.contains(&missing) && err.contains("key-path"), "{err}");
        let mut nats = vec![pair("creds", &path)];
        read_named_files("nats", &mut nats).unwrap();
        assert_eq!(nats, [pair("creds-text", "PRIVATE KEY TEXT")], "a NATS credentials file");
        let mut other = vec![pair("key-path", &path)];
        read_named_files("s3", &mut other).unwrap();
        assert_eq!(other, [pair("key-path", &path)], "only for the store that reads it");
    }

    #[test]
    fn the_profile_section_is_read_and_others_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        let text = "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = d/s\n\n[backup]\naws_access_key_id=AKIABACKUP\naws_secret_access_key=b/s\naws_session_token=tok\n";
        std::fs::write(&file, text).unwrap();
        let d = shared_file(&file, "default").unwrap().unwrap();
        assert_eq!((d.access_key_id.as_str(), d.secret_access_key.as_deref()), ("AKIADEFAULT", Some("d/s")));
        let b = shared_file(&file, "backup").unwrap().unwrap();
        assert_eq!(b.session_token.as_deref(), Some("tok"));
        assert_eq!(shared_file(&file, "nope").unwrap(), None);
        assert_eq!(shared_file(&dir.path().join("missing"), "default").unwrap(), None);
        assert!(!format!("{b:?}").contains("b/s"), "the secret is printed");
    }

    #[test]
    fn google_credentials_are_found_as_googles_libraries_find_them() {
        let dir = tempfile::tempdir().unwrap();
        let (named, adc, gcloud) =
            (dir.path().join("named.json"), dir.path().join("adc.json"), dir.path().join("g.json"));
        for (path, text) in [(&named, "named"), (&adc, "adc"), (&gcloud, "gcloud")] {
            std::fs::write(path, text).unwrap();
        }
        let run = |settings: &[(&str, &str)], env: &[(&str, &str)]| {
            let mut s: Vec<(String, String)> = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let env = |k: &str| env.iter().find(|(name, _)| *name == k).map(|(_, v)| v.to_string());
            gcs_settings("gs://b/p", &mut s, env, || Some(gcloud.clone())).map(|()| s)
        };
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        let file = named.display().to_string();
        let gac = ("GOOGLE_APPLICATION_CREDENTIALS", adc.to_str().unwrap());
        // The config's file wins over the environment's, and is read.
        assert_eq!(run(&[("credentials-file", &file)], &[gac]).unwrap(), [pair("credentials-json", "named")]);
        assert_eq!(run(&[("credentials-json", "given")], &[gac]).unwrap(), [pair("credentials-json", "given")]);
        assert_eq!(run(&[], &[gac]).unwrap(), [pair("credentials-json", "adc")]);
        assert_eq!(run(&[], &[]).unwrap(), [pair("credentials-json", "gcloud")]);
        // No key at all: the VM's metadata server, which the environment may name.
        let no_gcloud = |env: &[(&str, &str)]| {
            let env = |k: &str| env.iter().find(|(name, _)| *name == k).map(|(_, v)| v.to_string());
            let mut s = Vec::new();
            gcs_settings("gs://b/p", &mut s, env, || None).map(|()| s)
        };
        assert_eq!(no_gcloud(&[]).unwrap(), [pair("metadata-host", "metadata.google.internal")]);
        assert_eq!(no_gcloud(&[("GCE_METADATA_HOST", "10.0.0.9:80")]).unwrap(), [pair("metadata-host", "10.0.0.9:80")]);
        let mut elsewhere = vec![pair("endpoint", "http://127.0.0.1:4443")];
        gcs_settings("gs://b/p", &mut elsewhere, |_| None, || None).unwrap();
        assert_eq!(elsewhere, [pair("endpoint", "http://127.0.0.1:4443")], "not Google: no metadata server");
        let mut in_url = Vec::new();
        gcs_settings("gs://b/p?endpoint=http://127.0.0.1:4443", &mut in_url, |_| None, || None).unwrap();
        assert!(in_url.is_empty(), "an endpoint in the URL: no metadata server either");
        // An emulator: its endpoint, and no credentials from the environment.
        let emulator = ("STORAGE_EMULATOR_HOST", "127.0.0.1:4443");
        assert_eq!(run(&[], &[gac, emulator]).unwrap(), [pair("endpoint", "127.0.0.1:4443")]);
        let both = run(&[("credentials-file", &file), ("endpoint", "http://e:1")], &[emulator]).unwrap();
        assert_eq!(both, [pair("endpoint", "http://e:1"), pair("credentials-json", "named")]);
        let missing = dir.path().join("missing.json").display().to_string();
        let err = run(&[("credentials-file", &missing)], &[]).unwrap_err();
        assert!(err.to_string().contains(&missing), "{err}");
    }

    #[test]
    fn alibaba_keys_come_from_its_variables_unless_the_config_gives_some() {
        let env = |k: &str| match k {
            "ALIBABA_CLOUD_ACCESS_KEY_ID" => Some("LTAI".to_string()),
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET" => Some("s".to_string()),
            _ => None,
        };
        let mut s = Vec::new();
        alibaba_from_environment(&mut s, env);
        assert_eq!(s, [("access-key-id".into(), "LTAI".into()), ("secret-access-key".into(), "s".into())]);
        let mut given = vec![("access-key-id".to_string(), "MINE".to_string())];
        alibaba_from_environment(&mut given, env);
        assert_eq!(given.len(), 1);
    }

    #[test]
    fn a_broken_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(&file, "[default\naws_access_key_id = x\n").unwrap();
        let err = shared_file(&file, "default").unwrap_err().to_string();
        assert!(err.contains("credentials") && err.contains("INI"), "{err}");
    }
}
