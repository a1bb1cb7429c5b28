//! Setting up: `tally keygen` (Ed25519 key files), `tally token new` (operator
//! and auditor bearer tokens) and `tally certs init` (a demo PKI).

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::cli::*;
use crate::state::StateCode;
use crate::support::keys;

pub fn keygen(args: KeygenArgs) -> Result<()> {
    let name = match (&args.state, args.coordinator) {
        (Some(state), false) => state.to_string(),
        (None, true) => "coordinator".to_string(),
        _ => bail!("pass either --state CODE or --coordinator"),
    };
    let public_dir = args.public_out.as_deref().unwrap_or(&args.out);
    let (private, _) = keys::key_paths(&args.out, &name);
    let (_, public) = keys::key_paths(public_dir, &name);
    if args.keep_existing && private.exists() && public.exists() {
        let key = keys::read_signing_key(&private)?;
        if keys::read_verifying_key(&public)? != key.verifying_key() {
            bail!(
                "{} and {} exist but do not belong together; remove both to generate a new pair",
                private.display(),
                public.display()
            );
        }
        println!(
            "kept existing keys: {} and {}",
            private.display(),
            public.display()
        );
        return Ok(());
    }
    let key = keys::generate()?;
    let (private, public) = keys::write_key_files(&args.out, public_dir, &name, &key)?;
    println!(
        "private key: {} (mode 0600, keep it secret)",
        private.display()
    );
    println!("public key:  {}", public.display());
    println!(
        "public key (hex): {}",
        hex::encode(key.verifying_key().to_bytes())
    );
    Ok(())
}

pub(crate) fn certs_init(
    out: PathBuf,
    states: Vec<StateCode>,
    server_names: Vec<String>,
) -> Result<()> {
    let states = if states.is_empty() {
        crate::state::MEMBER_STATES
            .iter()
            .map(|s| StateCode::parse(s))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        states
    };
    let pki = crate::support::certs::init(&out, &states, &server_names)?;
    println!("CA certificate:          {}", pki.ca_cert.display());
    println!(
        "coordinator certificate: {} (key {})",
        pki.server_cert.display(),
        pki.server_key.display()
    );
    for (state, cert, key) in &pki.clients {
        println!(
            "{state} node certificate:  {} (key {})",
            cert.display(),
            key.display()
        );
    }
    println!(
        "private keys are mode 0600; {} signs certificates: keep it offline",
        out.join("ca.key").display()
    );
    Ok(())
}

pub(crate) fn token_new(role: crate::access::Role, name: String) -> Result<()> {
    if name.trim().is_empty() || name.contains(['"', '\\', '\n']) {
        bail!("--name must be a non-empty plain name (no quotes, backslashes or newlines)");
    }
    let token = crate::support::keys::new_token()?;
    let digest = crate::access::TokenDigest::of(&token);
    println!("token for {name} ({role}); give it to them, it is not stored anywhere:");
    println!();
    println!("    {token}");
    println!();
    println!("add to the coordinator configuration, then restart it:");
    println!();
    println!("[[operators]]");
    println!("name = \"{name}\"");
    println!("role = \"{role}\"");
    println!("token_sha256 = \"{}\"", digest.to_hex());
    Ok(())
}
