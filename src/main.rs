use clap::Parser;

fn main() {
    let cli = edgeprune::cli::Cli::parse();
    if let Err(e) = edgeprune::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
