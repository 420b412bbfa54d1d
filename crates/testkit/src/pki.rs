//! A throwaway certificate authority for the TLS tests, made with rcgen when a test starts: a CA,
//! and server and client certificates it signs, written as PEM files. Server certificates name
//! 127.0.0.1 and localhost, the only places the tests listen.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    dir: PathBuf,
    name: String,
}

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Server,
    Client,
}

impl Ca {
    /// A new CA named `name`; its certificate is `DIR/NAME-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(365);
        let cert = params.self_signed(&key).expect("CA certificate");
        let ca = Ca {
            params,
            key,
            dir: dir.to_path_buf(),
            name: name.to_string(),
        };
        std::fs::write(ca.cert_path(), cert.pem()).unwrap();
        ca
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// A certificate for `usage`, valid from `from` to `until` days from now (negative: the
    /// past), written as `DIR/STEM.pem` and `DIR/STEM-key.pem`.
    pub fn issue_for(&self, stem: &str, usage: Use, from: i64, until: i64) -> Pair {
        let names = match usage {
            Use::Server => vec!["127.0.0.1".to_string(), "localhost".to_string()],
            Use::Client => Vec::new(),
        };
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, stem);
        params.extended_key_usages = vec![match usage {
            Use::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Use::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.not_before = OffsetDateTime::now_utc() + Duration::days(from);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(until);
        let key = KeyPair::generate().expect("key");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("certificate");
        let pair = Pair {
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}-key.pem")),
        };
        std::fs::write(&pair.cert, cert.pem()).unwrap();
        std::fs::write(&pair.key, key.serialize_pem()).unwrap();
        pair
    }

    /// Valid from yesterday for 90 days.
    pub fn issue(&self, stem: &str, usage: Use) -> Pair {
        self.issue_for(stem, usage, -1, 90)
    }
}

/// Replaces `to`'s files with `from`'s the way a careful rotation does: each written next to its
/// target and renamed over it.
pub fn rotate(from: &Pair, to: &Pair) {
    for (src, dst) in [(&from.key, &to.key), (&from.cert, &to.cert)] {
        let tmp = dst.with_extension("rotating");
        std::fs::copy(src, &tmp).unwrap();
        std::fs::rename(&tmp, dst).unwrap();
    }
}
