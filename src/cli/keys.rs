//! `meshbus keygen`.

use super::{CliResult, Exit};
use meshbus::contract::keys;
use std::path::PathBuf;

/// Arguments of `keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Private key file to write (PKCS#8 PEM, mode 0600). The public key goes to `<out>.pub`.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// Writes a new key pair; prints the public key in hex (the `producer_id`).
pub(crate) fn keygen(a: KeygenArgs) -> CliResult {
    let public_path = PathBuf::from(format!("{}.pub", a.out.display()));
    for p in [&a.out, &public_path] {
        if p.exists() && !a.force {
            return Err(format!("{} exists; pass --force to overwrite", p.display()));
        }
    }
    let key = keys::generate_signing_key().map_err(|e| e.to_string())?;
    keys::write_private_key(&a.out, &key).map_err(|e| e.to_string())?;
    let public = keys::public_key_pem(&key.verifying_key()).map_err(|e| e.to_string())?;
    std::fs::write(&public_path, public)
        .map_err(|e| format!("cannot write {}: {e}", public_path.display()))?;
    println!("{}", hex::encode(key.verifying_key().to_bytes()));
    eprintln!(
        "wrote {} (0600) and {}",
        a.out.display(),
        public_path.display()
    );
    Ok(Exit::Ok)
}
