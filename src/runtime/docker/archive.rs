//! The engine's own diff of a step: from the image archive the engine saves
//! (`GET /images/{id}/get`), the one layer whose sha256 is the committed image's top
//! diff_id, copied to a file. Both archive layouts are read: Docker's legacy
//! `<id>/layer.tar` (names that say nothing of the content, so each layer is hashed as it
//! passes) and the OCI layout of newer engines (`blobs/sha256/<hex>`, where the name is the
//! digest and other layers are skipped unread).

use crate::layer::tar::{Kind, TarReader};
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::path::Path;

/// Copies the layer whose uncompressed sha256 is `diff_id` out of the archive `input` into
/// `dest`. Errors name the archive entry or say that no layer had that digest.
pub fn extract_layer(input: impl Read, diff_id: &str, dest: &Path) -> io::Result<u64> {
    let want = diff_id.strip_prefix("sha256:").unwrap_or(diff_id);
    let mut tar = TarReader::new(input);
    let tmp = dest.with_extension("partial");
    let mut seen = 0usize;
    while let Some(e) = tar.next_entry().map_err(io::Error::other)? {
        if e.header.kind != Kind::File {
            continue;
        }
        let name = e.header.path.clone();
        let blob_hex = name.strip_prefix("blobs/sha256/");
        let legacy = name.ends_with("/layer.tar");
        if blob_hex.is_none() && !legacy {
            continue;
        }
        if let Some(hex) = blob_hex
            && hex != want
        {
            continue;
        }
        seen += 1;
        let mut f = std::fs::File::create(&tmp)
            .map_err(|e| io::Error::new(e.kind(), format!("`{}`: {e}", tmp.display())))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0u64;
        let mut content = tar.content();
        loop {
            let n = content
                .read(&mut buf)
                .map_err(|e| io::Error::new(e.kind(), format!("archive entry `{name}`: {e}")))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            f.write_all(&buf[..n])?;
            total += n as u64;
        }
        let got = format!("{:x}", h.finalize());
        if got == want {
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, dest)?;
            return Ok(total);
        }
        if blob_hex.is_some() {
            let _ = std::fs::remove_file(&tmp);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("archive entry `{name}` has sha256 {got}, not its name"),
            ));
        }
    }
    let _ = std::fs::remove_file(&tmp);
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no layer in the engine's archive has diff_id sha256:{want} ({seen} layers read)"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::tar::{Header, write_entry};

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (p, d) in entries {
            let mut h = Header::new(p, Kind::File);
            h.size = d.len() as u64;
            write_entry(&mut out, &h, false, Some(&mut &d[..])).unwrap();
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn sha(d: &[u8]) -> String {
        format!("sha256:{:x}", Sha256::digest(d))
    }

    #[test]
    fn the_top_layer_out_of_either_layout() {
        let dir = std::env::temp_dir().join(format!("wcbuild-archive-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("top.tar");
        let (base, top) = (b"base layer".as_slice(), b"top layer".as_slice());
        let legacy = archive(&[
            ("aaaa/layer.tar", top),
            ("bbbb/layer.tar", base),
            ("manifest.json", b"[]"),
        ]);
        assert_eq!(extract_layer(&legacy[..], &sha(top), &dest).unwrap(), 9);
        assert_eq!(std::fs::read(&dest).unwrap(), top);
        let top_hex = sha(top)[7..].to_string();
        let base_hex = sha(base)[7..].to_string();
        let oci = archive(&[
            (&format!("blobs/sha256/{base_hex}"), base),
            (&format!("blobs/sha256/{top_hex}"), top),
        ]);
        std::fs::remove_file(&dest).unwrap();
        assert_eq!(extract_layer(&oci[..], &sha(top), &dest).unwrap(), 9);
        assert_eq!(std::fs::read(&dest).unwrap(), top);
        // A layer that is not there; a blob whose content lies about its name.
        let e = extract_layer(&legacy[..], &sha(b"other"), &dest).unwrap_err();
        assert!(e.to_string().contains("2 layers read"), "{e}");
        let lying = archive(&[(&format!("blobs/sha256/{top_hex}"), base)]);
        let e = extract_layer(&lying[..], &sha(top), &dest).unwrap_err();
        assert!(e.to_string().contains("not its name"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
