//! `EXPOSE` port specs as BuildKit reads them (`dockerfile2llb/convert_expose.go`):
//! `[[ip:]host:]port[-end][/proto]` becomes one `port/proto` entry per port of the range, the
//! protocol lower-cased (`tcp` when absent), and the same reading yields the two lint findings
//! (`ExposeProtoCasing`, `ExposeInvalidFormat`) and the image history text.
//!
//! Pure; words arrive already expanded and split (the planner does that).

use super::error::go_quote;

/// What one port spec means.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortSpec {
    /// The exposed ports, `8000/tcp`, one per port of a range, in order.
    pub ports: Vec<String>,
    /// The protocol was not written in lower case (`80/TCP`): lint `ExposeProtoCasing`.
    pub proto_not_lowercase: bool,
    /// An IP address or a host port was given (`127.0.0.1:80:80`, `8080:80`): lint
    /// `ExposeInvalidFormat`.
    pub has_host_part: bool,
}

/// The ports one spec exposes (`8000-8002/tcp` is `8000/tcp`, `8001/tcp`, `8002/tcp`), or
/// BuildKit's error text.
pub fn parse(spec: &str) -> Result<Vec<String>, String> {
    parse_spec(spec).map(|s| s.ports)
}

/// Every spec of one `EXPOSE`, in order (duplicates kept, as in the history).
pub fn parse_all<S: AsRef<str>>(specs: &[S]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for s in specs {
        out.extend(parse(s.as_ref())?);
    }
    Ok(out)
}

/// The `created_by` text BuildKit writes for an `EXPOSE` with these ports (Go's `%v` of the
/// list): `EXPOSE [80/tcp 443/tcp]`.
pub fn history(ports: &[String]) -> String {
    format!("EXPOSE [{}]", ports.join(" "))
}

/// One spec, with what the linter wants to know about how it was written.
pub fn parse_spec(raw: &str) -> Result<PortSpec, String> {
    let parts: Vec<&str> = raw.split(':').collect();
    let n = parts.len();
    let (ip, host, container) = match n {
        1 => (String::new(), "", parts[0]),
        2 => (String::new(), parts[0], parts[1]),
        _ => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
    };
    let (port, proto) = container.split_once('/').unwrap_or((container, ""));
    if port.is_empty() {
        return Err(format!(
            "invalid port: {}: no port specified",
            go_quote(raw)
        ));
    }
    let proto = match proto.to_lowercase().as_str() {
        "" => "tcp",
        "tcp" | "udp" | "sctp" => proto,
        _ => {
            return Err(format!(
                "invalid port: {}: invalid proto: {proto}",
                go_quote(raw)
            ));
        }
    };
    let spec_lints = PortSpec {
        ports: Vec::new(),
        proto_not_lowercase: proto != proto.to_lowercase(),
        has_host_part: !ip.is_empty() || !host.is_empty(),
    };
    if !ip.is_empty() {
        let bare = match ip.strip_prefix('[') {
            // Go's net.SplitHostPort(ip + ":") takes the text between the brackets.
            Some(r) => match r.split_once(']') {
                Some((inner, "")) => inner.to_string(),
                _ => return Err(format!("invalid IP address {ip}")),
            },
            None => ip.clone(),
        };
        if bare.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("invalid IP address: {bare}"));
        }
    }
    let (start, end) = port_range(port).ok_or_else(|| format!("invalid containerPort: {port}"))?;
    if !host.is_empty() {
        let (hs, he) = port_range(host).ok_or_else(|| format!("invalid hostPort: {host}"))?;
        if end - start != he - hs && end != start {
            return Err(format!(
                "invalid ranges specified for container and host Ports: {port} and {host}"
            ));
        }
    }
    let proto = proto.to_lowercase();
    Ok(PortSpec {
        ports: (start..=end).map(|p| format!("{p}/{proto}")).collect(),
        ..spec_lints
    })
}

/// `8000` or `8000-9000` (each 0–65535, as Go's `strconv.ParseInt` reads it, sign allowed),
/// not reversed; `a-a` is one port.
fn port_range(s: &str) -> Option<(u32, u32)> {
    if s.is_empty() {
        return None;
    }
    let (start, end) = match s.split_once('-') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let first = port_number(start)?;
    match end {
        None => Some((first, first)),
        Some(e) if e == start => Some((first, first)),
        Some(e) => {
            let last = port_number(e)?;
            (last >= first).then_some((first, last))
        }
    }
}

fn port_number(p: &str) -> Option<u32> {
    let digits = p.strip_prefix(['+', '-']).unwrap_or(p);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let n: i64 = p.parse().ok()?;
    u32::try_from(n).ok().filter(|n| *n <= 65535)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_expand_to_one_port_each() {
        assert_eq!(
            parse("8000-8002/tcp").unwrap(),
            ["8000/tcp", "8001/tcp", "8002/tcp"]
        );
        assert_eq!(parse("80").unwrap(), ["80/tcp"]);
        assert_eq!(parse("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(parse("5-5").unwrap(), ["5/tcp"]);
        assert_eq!(
            parse("0.0.0.0:1234-1235:3333-3334/tcp").unwrap(),
            ["3333/tcp", "3334/tcp"]
        );
        assert_eq!(parse("[2001:4860:0:2001::68]::333").unwrap(), ["333/tcp"]);
        assert_eq!(parse("2001:4860:0:2001::68::333").unwrap(), ["333/tcp"]);
        assert_eq!(parse("::1:80:80").unwrap(), ["80/tcp"]);
        assert_eq!(parse("::::80").unwrap(), ["80/tcp"]);
        assert_eq!(
            parse_all(&["80", "443/tcp", "80"]).unwrap(),
            ["80/tcp", "443/tcp", "80/tcp"]
        );
        assert_eq!(
            history(&parse("8000-8002/tcp").unwrap()),
            "EXPOSE [8000/tcp 8001/tcp 8002/tcp]"
        );
    }

    #[test]
    fn errors_are_buildkits() {
        assert_eq!(
            parse("").unwrap_err(),
            r#"invalid port: "": no port specified"#
        );
        assert_eq!(
            parse("0.0.0.0:1234-1235:/tcp").unwrap_err(),
            r#"invalid port: "0.0.0.0:1234-1235:/tcp": no port specified"#
        );
        assert_eq!(
            parse("80/http").unwrap_err(),
            r#"invalid port: "80/http": invalid proto: http"#
        );
        assert_eq!(parse("70000").unwrap_err(), "invalid containerPort: 70000");
        assert_eq!(
            parse("9000-8000").unwrap_err(),
            "invalid containerPort: 9000-8000"
        );
        assert_eq!(
            parse("localhost:1234:1234/tcp").unwrap_err(),
            "invalid IP address: localhost"
        );
        assert_eq!(
            parse("1-3:5-6").unwrap_err(),
            "invalid ranges specified for container and host Ports: 5-6 and 1-3"
        );
        assert!(parse("8080-8081:80").is_ok());
        assert_eq!(parse("x:80").unwrap_err(), "invalid hostPort: x");
    }

    #[test]
    fn lint_facts() {
        let s = parse_spec("80/TcP").unwrap();
        assert!(s.proto_not_lowercase && !s.has_host_part);
        assert!(!parse_spec("80/tcp").unwrap().proto_not_lowercase);
        assert!(!parse_spec("80").unwrap().proto_not_lowercase);
        assert!(parse_spec("5000:5000").unwrap().has_host_part);
        assert!(parse_spec("[::1]:8080:8080").unwrap().has_host_part);
        assert!(!parse_spec("8000").unwrap().has_host_part);
    }
}
