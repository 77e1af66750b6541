//! A small blocking HTTP/1.1 client for the Engine API: one connection per request
//! (`Connection: close`), bodies by length, chunked or to the end, request bodies streamed
//! chunked, and the hijacked connection `attach` upgrades to. It runs over any byte stream
//! the endpoint opens (a unix socket, a named pipe, TCP, TLS), which is why it is not
//! reqwest: neither unix sockets nor a hijacked connection fit there.

use std::io::{self, BufRead, BufReader, Read, Write};

/// A connection to the engine.
pub trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

/// The longest status line or header line accepted.
const MAX_LINE: usize = 16 << 10;
/// The most header lines accepted.
const MAX_HEADERS: usize = 200;

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    Close,
}

/// A response: status, headers, and the body as a reader.
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names in lower case, values trimmed.
    pub headers: Vec<(String, String)>,
    body: Body,
}

/// The body of a response (or, after a 101, the raw connection).
pub struct Body {
    conn: BufReader<Box<dyn Conn>>,
    framing: Framing,
    /// Bytes left in the current chunk (or of the length).
    left: u64,
    done: bool,
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as a reader.
    pub fn into_body(self) -> Body {
        self.body
    }

    /// The whole body, at most `limit` bytes.
    pub fn read_all(self, limit: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.body.take(limit + 1).read_to_end(&mut out)?;
        if out.len() as u64 > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("response body longer than {limit} bytes"),
            ));
        }
        Ok(out)
    }
}

impl Body {
    /// The raw connection after an upgrade (what is buffered comes first).
    pub fn raw(self) -> BufReader<Box<dyn Conn>> {
        self.conn
    }

    fn next_chunk(&mut self) -> io::Result<()> {
        let line = read_line(&mut self.conn)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let n = u64::from_str_radix(size, 16).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad chunk size line `{}`", line.escape_debug()),
            )
        })?;
        if n == 0 {
            // Trailers, then the blank line.
            loop {
                if read_line(&mut self.conn)?.is_empty() {
                    break;
                }
            }
            self.done = true;
        }
        self.left = n;
        Ok(())
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        match self.framing {
            Framing::Close => self.conn.read(buf),
            Framing::Length(_) => {
                if self.left == 0 {
                    self.done = true;
                    return Ok(0);
                }
                let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
                let n = self.conn.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the engine closed the connection {} bytes short", self.left),
                    ));
                }
                self.left -= n as u64;
                Ok(n)
            }
            Framing::Chunked => {
                if self.left == 0 {
                    self.next_chunk()?;
                    if self.done {
                        return Ok(0);
                    }
                }
                let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
                let n = self.conn.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the engine closed the connection inside a chunk",
                    ));
                }
                self.left -= n as u64;
                if self.left == 0 {
                    let end = read_line(&mut self.conn)?;
                    if !end.is_empty() {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "a chunk does not end with CRLF",
                        ));
                    }
                }
                Ok(n)
            }
        }
    }
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the engine closed the connection inside a header",
            ));
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&buf[..i]);
                r.consume(i + 1);
                break;
            }
            None => {
                let n = buf.len();
                line.extend_from_slice(buf);
                r.consume(n);
            }
        }
        if line.len() > MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a header line longer than {MAX_LINE} bytes"),
            ));
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a header line is not UTF-8"))
}

/// Writes the body of a request chunked.
struct Chunked<'a> {
    out: &'a mut dyn Write,
    buf: Vec<u8>,
}

impl Chunked<'_> {
    fn flush_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        write!(self.out, "{:x}\r\n", self.buf.len())?;
        self.out.write_all(&self.buf)?;
        self.out.write_all(b"\r\n")?;
        self.buf.clear();
        Ok(())
    }
}

impl Write for Chunked<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 256 << 10 {
            self.flush_chunk()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.flush_chunk()?;
        self.out.flush()
    }
}

/// What a request sends.
pub enum ReqBody<'a> {
    /// Nothing.
    None,
    /// JSON bytes.
    Json(Vec<u8>),
    /// A stream of the content type given, written chunked by the function.
    Stream(
        &'static str,
        &'a mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ),
}

/// Sends one request on `conn` and reads the response head. `upgrade` asks for the hijacked
/// connection `attach` gives (`Upgrade: tcp`).
pub fn send(
    conn: Box<dyn Conn>,
    host: &str,
    method: &str,
    path: &str,
    body: ReqBody<'_>,
    upgrade: bool,
) -> io::Result<Response> {
    let mut conn = BufReader::with_capacity(64 << 10, conn);
    {
        let w = conn.get_mut();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: wcbuild/{}\r\n",
            env!("CARGO_PKG_VERSION")
        );
        if upgrade {
            head.push_str("Connection: Upgrade\r\nUpgrade: tcp\r\n");
        } else {
            head.push_str("Connection: close\r\n");
        }
        match &body {
            ReqBody::None => head.push_str("Content-Length: 0\r\n"),
            ReqBody::Json(b) => head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            )),
            ReqBody::Stream(ct, _) => head.push_str(&format!(
                "Content-Type: {ct}\r\nTransfer-Encoding: chunked\r\n"
            )),
        }
        head.push_str("\r\n");
        w.write_all(head.as_bytes())?;
        match body {
            ReqBody::None => {}
            ReqBody::Json(b) => w.write_all(&b)?,
            ReqBody::Stream(_, f) => {
                let mut c = Chunked {
                    out: &mut *w,
                    buf: Vec::with_capacity(256 << 10),
                };
                f(&mut c)?;
                c.flush_chunk()?;
                w.write_all(b"0\r\n\r\n")?;
            }
        }
        w.flush()?;
    }
    let status_line = read_line(&mut conn)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "not an HTTP response: `{}`",
                    status_line
                        .chars()
                        .take(80)
                        .collect::<String>()
                        .escape_debug()
                ),
            )
        })?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(&mut conn)?;
        if line.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than {MAX_HEADERS} header lines"),
            ));
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let framing = if status == 101 || (upgrade && status == 200) {
        Framing::Close
    } else if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        Framing::Chunked
    } else if let Some(l) = get("content-length") {
        Framing::Length(l.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad Content-Length `{l}`"),
            )
        })?)
    } else if status == 204 || status == 304 || method == "HEAD" {
        Framing::Length(0)
    } else {
        Framing::Close
    };
    let left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    Ok(Response {
        status,
        headers,
        body: Body {
            conn,
            framing,
            left,
            done: false,
        },
    })
}

/// Percent-encodes a query value.
pub fn encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A connection that answers with canned bytes and keeps what was written.
    struct Canned {
        input: Cursor<Vec<u8>>,
        written: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    }
    impl Read for Canned {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            self.input.read(b)
        }
    }
    impl Write for Canned {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.written.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn canned(answer: &[u8]) -> (Box<dyn Conn>, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
        let w = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        (
            Box::new(Canned {
                input: Cursor::new(answer.to_vec()),
                written: w.clone(),
            }),
            w,
        )
    }

    #[test]
    fn chunked_bodies_both_ways() {
        let (c, written) = canned(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nApi-Version: 1.41\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n",
        );
        let mut f = |w: &mut dyn Write| w.write_all(b"abc");
        let r = send(
            c,
            "docker",
            "POST",
            "/images/load",
            ReqBody::Stream("application/x-tar", &mut f),
            false,
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("api-version"), Some("1.41"));
        assert_eq!(r.read_all(100).unwrap(), b"hello world");
        let sent = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        assert!(sent.starts_with("POST /images/load HTTP/1.1\r\n"), "{sent}");
        assert!(sent.contains("Transfer-Encoding: chunked\r\n"), "{sent}");
        assert!(sent.ends_with("\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), "{sent}");
    }

    #[test]
    fn lengths_limits_and_garbage() {
        let (c, _) = canned(b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nnope!extra");
        let r = send(c, "d", "GET", "/x", ReqBody::None, false).unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.read_all(10).unwrap(), b"nope!");
        let (c, _) = canned(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort");
        let r = send(c, "d", "GET", "/x", ReqBody::None, false).unwrap();
        assert!(r.read_all(100).is_err());
        let (c, _) = canned(b"SSH-2.0-OpenSSH\r\n\r\n");
        let e = send(c, "d", "GET", "/x", ReqBody::None, false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("not an HTTP response"), "{e}");
        let (c, _) = canned(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
        let r = send(c, "d", "GET", "/x", ReqBody::None, false).unwrap();
        assert!(
            r.read_all(100)
                .unwrap_err()
                .to_string()
                .contains("chunk size")
        );
        let (c, _) = canned(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n123456789");
        let r = send(c, "d", "GET", "/x", ReqBody::None, false).unwrap();
        assert!(
            r.read_all(4)
                .unwrap_err()
                .to_string()
                .contains("longer than 4")
        );
        assert_eq!(encode("a b/c=d"), "a%20b%2Fc%3Dd");
    }
}
