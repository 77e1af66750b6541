//! The engine's multiplexed output stream (`application/vnd.docker.multiplexed-stream`, a
//! container without a TTY): frames of an 8-byte header `[stream, 0, 0, 0, size (u32 big
//! endian)]` then `size` bytes. Stream 0 is stdin echoed on stdout, 1 stdout, 2 stderr, 3
//! the engine's own error.

use crate::runtime::OutputStream;
use std::io::{self, Read};

/// One frame's worth of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Bytes the process wrote.
    Output(OutputStream, Vec<u8>),
    /// The engine reports an error on the stream.
    SystemError(String),
}

/// The largest frame accepted (the engine writes at most 32 KiB per frame).
pub const MAX_FRAME: u32 = 16 << 20;

/// Reads the next frame; `None` at the end of the stream.
pub fn next_frame(r: &mut impl Read) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        let n = r.read(&mut head[got..])?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the output stream ends inside a frame header ({got} of 8 bytes)"),
            ));
        }
        got += n;
    }
    if head[1..4] != [0, 0, 0] || head[0] > 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a multiplexed stream frame header: {head:02x?}"),
        ));
    }
    let size = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    if size > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("an output frame of {size} bytes (at most {MAX_FRAME})"),
        ));
    }
    let mut data = vec![0u8; size as usize];
    r.read_exact(&mut data)?;
    Ok(Some(match head[0] {
        0 | 1 => Frame::Output(OutputStream::Stdout, data),
        2 => Frame::Output(OutputStream::Stderr, data),
        _ => Frame::SystemError(String::from_utf8_lossy(&data).into_owned()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(t: u8, data: &[u8]) -> Vec<u8> {
        let mut v = vec![t, 0, 0, 0];
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn frames_split_by_stream() {
        let mut bytes = frame(1, b"out\n");
        bytes.extend(frame(2, b"err\n"));
        bytes.extend(frame(3, b"boom"));
        bytes.extend(frame(1, b""));
        let mut r = &bytes[..];
        assert_eq!(
            next_frame(&mut r).unwrap(),
            Some(Frame::Output(OutputStream::Stdout, b"out\n".to_vec()))
        );
        assert_eq!(
            next_frame(&mut r).unwrap(),
            Some(Frame::Output(OutputStream::Stderr, b"err\n".to_vec()))
        );
        assert_eq!(
            next_frame(&mut r).unwrap(),
            Some(Frame::SystemError("boom".into()))
        );
        assert_eq!(
            next_frame(&mut r).unwrap(),
            Some(Frame::Output(OutputStream::Stdout, vec![]))
        );
        assert_eq!(next_frame(&mut r).unwrap(), None);
    }

    #[test]
    fn hostile_frames_are_refused() {
        // A TTY's raw bytes are not frames.
        assert!(next_frame(&mut &b"hello world\n"[..]).is_err());
        // A truncated header, a truncated payload, an oversized frame.
        assert!(next_frame(&mut &[1u8, 0, 0][..]).is_err());
        assert!(next_frame(&mut &frame(1, b"abcdef")[..10]).is_err());
        let mut big = vec![1u8, 0, 0, 0];
        big.extend_from_slice(&u32::MAX.to_be_bytes());
        let e = next_frame(&mut &big[..]).unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
    }
}
