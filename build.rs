//! Bakes the location of libtorch into every binary (an rpath), so that edgeprune runs without
//! LD_LIBRARY_PATH. LIBTORCH comes from .cargo/config.toml (the `.libtorch` link that
//! scripts/setup-libtorch.sh makes) or from the environment.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=.libtorch");
    let Some(root) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        println!("cargo:warning=LIBTORCH is not set: run scripts/setup-libtorch.sh (or `make setup`) first");
        return;
    };
    let lib = root.join("lib");
    let lib = lib.canonicalize().unwrap_or(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}
