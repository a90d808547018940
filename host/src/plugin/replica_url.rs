//! Replica URLs as the host handles them: made absolute and clean
//! (`normalize_url`), and fit to show (`redact_url`).

/// Make a replica URL absolute and clean: plain and `file://` paths become
/// absolute paths without `.`/`..` (a plugin has no working directory, and
/// the host grants the directory under exactly this name).
pub fn normalize_url(url: &str) -> std::io::Result<String> {
    if let Some(rest) = url.strip_prefix("file://") {
        let path = url::Url::parse(url)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .unwrap_or_else(|| std::path::PathBuf::from(rest));
        let clean = clean_path(&path)?;
        return Ok(url::Url::from_file_path(&clean)
            .map(|u| u.to_string())
            .unwrap_or_else(|()| format!("file://{}", clean.display())));
    }
    if url.contains("://") {
        return Ok(url.to_string());
    }
    let expanded = match url.strip_prefix("~/") {
        Some(rest) => dirs::home_dir().map(|h| h.join(rest)).unwrap_or_else(|| url.into()),
        None => url.into(),
    };
    Ok(clean_path(&expanded)?.display().to_string())
}

/// Absolute and without `.`/`..` (resolved lexically), then with the
/// symlinks of its existing part resolved.
fn clean_path(path: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    use std::path::Component;
    let mut lexical = std::path::PathBuf::new();
    for part in std::path::absolute(path)?.components() {
        match part {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other.as_os_str()),
        }
    }
    let mut existing = lexical.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent().map(|p| p.to_path_buf())) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return Ok(lexical),
        }
    }
    let mut out = existing.canonicalize().unwrap_or(existing);
    out.extend(rest.iter().rev());
    Ok(out)
}

/// Query parameters whose values are credentials (`?password=`, `?token=`,
/// `?secret-access-key=`, an Azure SAS's `sig=`), by a part of their name.
const SECRET_PARAMS: &[&str] = &["password", "secret", "token", "sig", "key"];

/// A URL fit for a message or a log: a password in it (`webdav://user:
/// secret@host`, `nats://user:secret@host`) is replaced by `***`, and so
/// are a NATS token (`nats://TOKEN@host`) and the values of query
/// parameters named like credentials. Anything else is returned as it is.
pub fn redact_url(url: &str) -> String {
    // Userinfo first, on the whole URL: a password with an unescaped `?`
    // must not be taken for the start of the query.
    let url = redact_userinfo(url);
    let (base, query) = url.split_once('?').map_or((url.as_str(), None), |(b, q)| (b, Some(q)));
    let base = base.to_string();
    let Some(query) = query else { return base };
    let secret = |name: &str| SECRET_PARAMS.iter().any(|s| name.to_ascii_lowercase().contains(s));
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if secret(name) => format!("{name}=***"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

/// `redact_url` of a URL without its query.
fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return unescaped_password(scheme, rest, authority_end) };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None if scheme == "nats" => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// A password with an unescaped `/`, `?` or `#` (`u:pa/ss@host`) ends
/// the authority early and leaves no `@` in it; what follows the `:` is
/// then no port, and is hidden up to the last `@` (or to the end).
fn unescaped_password(scheme: &str, rest: &str, authority_end: usize) -> String {
    match rest[..authority_end].split_once(':') {
        Some((user, after)) if !after.chars().all(|c| c.is_ascii_digit()) => match rest.rfind('@') {
            Some(at) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => format!("{scheme}://{user}:***"),
        },
        _ => format!("{scheme}://{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_and_paths_become_clean_absolute_paths() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        let messy = format!("{}/a/../b/./c", dir.path().display());
        assert_eq!(normalize_url(&messy).unwrap(), format!("{}/b/c", real.display()));
        assert_eq!(normalize_url(&format!("file://{messy}")).unwrap(), format!("file://{}/b/c", real.display()));
        assert_eq!(normalize_url("s3://bucket/a/../b").unwrap(), "s3://bucket/a/../b");
    }

    #[test]
    fn a_password_in_a_url_is_never_shown() {
        assert_eq!(redact_url("webdav://me:s3cr%40t@dav.example:8080/p?x=1"), "webdav://me:***@dav.example:8080/p?x=1");
        assert_eq!(redact_url("nats://TOKEN@127.0.0.1:4222/b"), "nats://***@127.0.0.1:4222/b");
        assert_eq!(redact_url("sftp://backup@host/p"), "sftp://backup@host/p", "a user name alone is no secret");
        assert_eq!(redact_url("sftp://u:pa/ss@h/p"), "sftp://u:***@h/p", "a password with a `/`");
        assert_eq!(redact_url("sftp://u:pa#ss@h/p"), "sftp://u:***@h/p");
        assert_eq!(redact_url("sftp://u:pa?ss@h/p"), "sftp://u:***@h/p", "a password with a `?`");
        assert_eq!(redact_url("sftp://h:22/db@1"), "sftp://h:22/db@1", "a port, and an `@` in the path");
        assert_eq!(redact_url("s3://bucket/a@b"), "s3://bucket/a@b", "an @ in the path is not userinfo");
        assert_eq!(redact_url("/var/db"), "/var/db");
        assert_eq!(
            redact_url("abs://c/p?sv=2024&sig=abc%2Fdef&se=x"),
            "abs://c/p?sv=2024&sig=***&se=x",
            "a SAS signature"
        );
        assert_eq!(redact_url("webdav://h/p?webdav-password=pw&x=1"), "webdav://h/p?webdav-password=***&x=1");
    }
}
