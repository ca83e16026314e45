//! Issuer credentials on disk: `ca.crt`, `issuer.crt`, `issuer.key` (or the
//! names given by the `--issuer-*-filename` flags, e.g. cert-manager's
//! `ca.crt`, `tls.crt`, `tls.key`).

use std::{
    io,
    path::{Path, PathBuf},
};

use dapr_security::CaCredentials;

/// Where the three credential files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialPaths {
    pub trust_anchors: PathBuf,
    pub issuer_cert: PathBuf,
    pub issuer_key: PathBuf,
}

impl CredentialPaths {
    /// Each file name is taken relative to `dir`, unless it is absolute.
    pub fn new(dir: &Path, ca: &str, cert: &str, key: &str) -> Self {
        let join = |name: &str| {
            let p = Path::new(name);
            if p.is_absolute() {
                p.to_owned()
            } else {
                dir.join(p)
            }
        };
        Self {
            trust_anchors: join(ca),
            issuer_cert: join(cert),
            issuer_key: join(key),
        }
    }

    fn all(&self) -> [&Path; 3] {
        [&self.trust_anchors, &self.issuer_cert, &self.issuer_key]
    }
}

/// What is on disk.
#[derive(Debug, PartialEq, Eq)]
pub enum FileState {
    /// None of the three files exists.
    Missing,
    /// Some exist, these do not.
    Partial(Vec<PathBuf>),
    Present(CaCredentials),
}

/// Reads the three files.
pub fn read_files(paths: &CredentialPaths) -> io::Result<FileState> {
    let mut contents = Vec::with_capacity(3);
    let mut missing = Vec::new();
    for p in paths.all() {
        match std::fs::read(p) {
            Ok(b) => contents.push(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(p.to_owned()),
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
        }
    }
    if missing.len() == 3 {
        return Ok(FileState::Missing);
    }
    if !missing.is_empty() {
        return Ok(FileState::Partial(missing));
    }
    let issuer_key_pem = contents.pop().unwrap_or_default();
    let issuer_chain_pem = contents.pop().unwrap_or_default();
    let trust_anchors_pem = contents.pop().unwrap_or_default();
    Ok(FileState::Present(CaCredentials {
        trust_anchors_pem,
        issuer_chain_pem,
        issuer_key_pem,
    }))
}

/// Writes the three files (certificates 0644, key 0600), each through a
/// temporary file and a rename so readers never see half a file.
pub fn write_files(paths: &CredentialPaths, creds: &CaCredentials) -> io::Result<()> {
    write_atomic(&paths.trust_anchors, &creds.trust_anchors_pem, 0o644)?;
    write_atomic(&paths.issuer_cert, &creds.issuer_chain_pem, 0o644)?;
    write_atomic(&paths.issuer_key, &creds.issuer_key_pem, 0o600)?;
    Ok(())
}

fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "credential".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = CredentialPaths::new(dir.path(), "ca.crt", "tls.crt", "/abs/tls.key");
        assert_eq!(p.trust_anchors, dir.path().join("ca.crt"));
        assert_eq!(p.issuer_cert, dir.path().join("tls.crt"));
        assert_eq!(p.issuer_key, PathBuf::from("/abs/tls.key"));

        let p = CredentialPaths::new(
            &dir.path().join("sub"),
            "ca.crt",
            "issuer.crt",
            "issuer.key",
        );
        assert_eq!(read_files(&p).unwrap(), FileState::Missing);
        let creds = CaCredentials {
            trust_anchors_pem: b"a".to_vec(),
            issuer_chain_pem: b"b".to_vec(),
            issuer_key_pem: b"c".to_vec(),
        };
        write_files(&p, &creds).unwrap();
        assert_eq!(read_files(&p).unwrap(), FileState::Present(creds));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&p.issuer_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_file(&p.issuer_cert).unwrap();
        assert_eq!(
            read_files(&p).unwrap(),
            FileState::Partial(vec![p.issuer_cert.clone()])
        );
    }
}
