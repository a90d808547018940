//! Litestream writes long flags Go-style, with one dash (`-config`,
//! `-exec`, `-if-replica-exists`); clap wants two. Rewrite before parsing.

/// Turn `-name` and `-name=value` into `--name...` for multi-letter flags.
/// Single letters (`-o`, `-h`), `--` and everything after it, negative
/// numbers and plain values are left alone.
pub fn normalize(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest_is_positional = false;
    for arg in args {
        if rest_is_positional {
            out.push(arg);
            continue;
        }
        if arg == "--" {
            rest_is_positional = true;
            out.push(arg);
            continue;
        }
        let is_go_long = arg.starts_with('-')
            && !arg.starts_with("--")
            && arg.len() > 2
            && arg[1..].split('=').next().is_some_and(|name| {
                name.len() > 1
                    && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        out.push(if is_go_long { format!("-{arg}") } else { arg });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    fn n(args: &[&str]) -> Vec<String> {
        normalize(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn go_style_flags_become_long_flags() {
        assert_eq!(n(&["sluice", "replicate", "-config", "x.yml"]), ["sluice", "replicate", "--config", "x.yml"]);
        assert_eq!(
            n(&["restore", "-o", "my.db", "-if-replica-exists", "-txid=00ff"]),
            ["restore", "-o", "my.db", "--if-replica-exists", "--txid=00ff"]
        );
        assert_eq!(n(&["--json", "-exec", "app -x --y"]), ["--json", "--exec", "app -x --y"]);
        assert_eq!(n(&["ltx", "-level", "-1"]), ["ltx", "--level", "-1"]);
        assert_eq!(n(&["x", "--", "-config"]), ["x", "--", "-config"]);
    }
}
