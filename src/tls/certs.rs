//! PEM files and the `tls-server-end-point` channel binding (RFC 5929) that
//! SCRAM-SHA-256-PLUS binds a login to.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;

fn read_error(path: &Path, e: impl std::fmt::Display) -> String {
    format!("cannot read \"{}\": {e}", path.display())
}

/// A PEM certificate chain (at least one certificate).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(path, e))?;
    if certs.is_empty() {
        return Err(format!("no certificate in \"{}\"", path.display()));
    }
    Ok(certs)
}

/// A PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| read_error(path, e))
}

/// CA certificates as a root store.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(path)? {
        roots.add(c).map_err(|e| format!("\"{}\": {e}", path.display()))?;
    }
    Ok(roots)
}

/// Reads one DER header at `at`: (tag, start of contents, length).
fn der_header(d: &[u8], at: usize) -> Option<(u8, usize, usize)> {
    let tag = *d.get(at)?;
    let first = *d.get(at + 1)? as usize;
    let (len, start) = if first < 0x80 {
        (first, at + 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = d.get(at + 2..at + 2 + n)?;
        (bytes.iter().fold(0usize, |acc, b| acc << 8 | *b as usize), at + 2 + n)
    };
    (start + len <= d.len()).then_some((tag, start, len))
}

/// The OID (DER contents) of a certificate's signatureAlgorithm.
fn signature_oid(cert: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (SEQUENCE, body, _) = der_header(cert, 0)? else { return None };
    let (SEQUENCE, tbs, tbs_len) = der_header(cert, body)? else { return None };
    let (SEQUENCE, alg, _) = der_header(cert, tbs + tbs_len)? else { return None };
    let (OID, oid, oid_len) = der_header(cert, alg)? else { return None };
    Some(&cert[oid..oid + oid_len])
}

/// `tls-server-end-point` data for a certificate: its hash with the hash function
/// of its signature (SHA-256 for MD5 and SHA-1). `None` for signatures without one
/// (Ed25519), as in PostgreSQL: such a server does not offer channel binding.
pub fn end_point_hash(cert: &[u8]) -> Option<Vec<u8>> {
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    let oid = signature_oid(cert)?;
    let hash = if let Some(last) = oid.strip_prefix(RSA) {
        match last {
            // md5, sha1, sha256, sha224 with RSA
            [0x04] | [0x05] | [0x0b] | [0x0e] => 256,
            [0x0c] => 384,
            [0x0d] => 512,
            _ => return None,
        }
    } else if let Some(rest) = oid.strip_prefix(ECDSA) {
        match rest {
            // ecdsa-with-SHA1, -SHA224, -SHA256
            [0x01] | [0x03, 0x01] | [0x03, 0x02] => 256,
            [0x03, 0x03] => 384,
            [0x03, 0x04] => 512,
            _ => return None,
        }
    } else {
        return None;
    };
    Some(match hash {
        256 => sha2::Sha256::digest(cert).to_vec(),
        384 => sha2::Sha384::digest(cert).to_vec(),
        _ => sha2::Sha512::digest(cert).to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_are_bounded() {
        assert_eq!(signature_oid(&[]), None);
        assert_eq!(signature_oid(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(signature_oid(&[0x30, 0x03, 0x30, 0x01]), None);
        assert_eq!(end_point_hash(b"not a certificate"), None);
    }

    #[test]
    fn ecdsa_sha256_certificate() {
        // SEQUENCE { SEQUENCE {} (tbs), SEQUENCE { OID ecdsa-with-SHA256 } }
        let cert = [0x30, 0x0e, 0x30, 0x00, 0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
        assert_eq!(end_point_hash(&cert), Some(sha2::Sha256::digest(cert).to_vec()));
    }
}
