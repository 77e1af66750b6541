//! Paths and times as images hold them: Windows paths mapped to the container's `/`-separated
//! view, lexical joins for WORKDIR and COPY destinations, RFC 3339 times.

/// RFC 3339 (UTC, seconds) for a Unix time.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Where a Windows path (`C:\app`, `\app`, `app`, `c:/x`) lives in the container, as a
/// `/`-separated path; other drives are refused.
pub fn windows_path(p: &str) -> Result<String, String> {
    let mut s = p.replace('\\', "/");
    if s.len() >= 2 && s.as_bytes()[1] == b':' {
        let drive = s.as_bytes()[0].to_ascii_uppercase();
        if drive != b'C' {
            return Err(format!(
                "`{p}` is not on the system drive (C:); Windows containers only have C:"
            ));
        }
        s = s[2..].to_string();
    }
    Ok(s)
}

/// Joins `rel` to `base` (an absolute `/`-separated path) and cleans `.`, `..` and repeated
/// slashes lexically, as BuildKit's `path.Join` does; the result is absolute.
pub(crate) fn join_clean(base: &str, rel: &str) -> String {
    let joined = if rel.starts_with('/') {
        rel.to_string()
    } else {
        format!("{}/{rel}", base.trim_end_matches('/'))
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_paths() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(windows_path("C:\\app\\bin").unwrap(), "/app/bin");
        assert_eq!(windows_path("c:/x").unwrap(), "/x");
        assert_eq!(windows_path("app").unwrap(), "app");
        assert!(
            windows_path("D:\\data")
                .unwrap_err()
                .contains("not on the system drive")
        );
        assert_eq!(join_clean("/app", "../etc/./x"), "/etc/x");
    }
}
