use clap::Parser;

// jemalloc serves every allocation of the process: its `malloc` symbols are unprefixed, so
// libtorch and ONNX Runtime, loaded as shared libraries, allocate from it too. A training step
// frees and reallocates the same large activation buffers every step; glibc's heap fragments under
// that (peak RSS 16-30% higher, results/train-step-precision.md), and returning pages to the system only to fault them in
// again next step costs time. Hence no decay: freed pages are kept for reuse. `MALLOC_CONF` in the
// environment still overrides these options. x86-64 Linux only (see Cargo.toml); glibc elsewhere.
#[cfg(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's compiled-in options (it reads this C string, `const char *malloc_conf`, at start).
#[cfg(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu"))]
#[unsafe(export_name = "malloc_conf")]
pub static MALLOC_CONF: &[u8; 36] = b"dirty_decay_ms:-1,muzzy_decay_ms:-1\0";

fn main() {
    let cli = edgeprune::cli::Cli::parse();
    if let Err(e) = edgeprune::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
