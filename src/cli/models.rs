//! Model and data files: `init`, `import`, `export` (ONNX) and `convert-data`.

use super::*;

#[derive(Args)]
pub struct InitArgs {
    /// Zoo network name.
    pub network: String,
    #[arg(long, default_value_t = 10)]
    pub num_classes: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(short, long)]
    pub out: PathBuf,
    /// Replace what an earlier run of this command wrote there (never files edgeprune did not write).
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Args)]
pub struct ImportArgs {
    /// The ONNX file.
    pub onnx: PathBuf,
    /// Output model folder.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Replace what an earlier run of this command wrote there (never files edgeprune did not write).
    #[arg(long)]
    pub overwrite: bool,
    /// The per-channel mean the network was trained with, on pixels scaled to [0, 1]
    /// (e.g. 0.4914,0.4822,0.4465); ONNX files do not carry it. Without it, edgeprune uses the
    /// statistics of the training data it is given.
    #[arg(long, value_delimiter = ',', requires = "std")]
    pub mean: Option<Vec<f32>>,
    /// The per-channel standard deviation that goes with --mean.
    #[arg(long, value_delimiter = ',', requires = "mean")]
    pub std: Option<Vec<f32>>,
}

#[derive(Args)]
pub struct ConvertDataArgs {
    /// Dataset to read (any layout edgeprune reads; default: the usual search).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Instead of CIFAR-10 binary files, write the images `edgeprune eval MODEL` scores (the
    /// split, subset, size and channels it uses) as NumPy files: images.npy (uint8 N x C x H x
    /// W), labels.npy (int64), classes.txt, and normalize.json (the mean and std per channel the
    /// model applies to pixel / 255).
    #[arg(long, value_name = "MODEL")]
    pub like: Option<PathBuf>,
    /// With --like: the class subset.
    #[arg(long, value_delimiter = ',', requires = "like")]
    pub subset: Vec<String>,
    /// With --like: test, train or val.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Output folder.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Replace what an earlier run of this command wrote there (never files edgeprune did not write).
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Model folder, .onnx file, training run folder (its best model) or zoo name.
    pub model: String,
    /// Output classes when MODEL is a zoo name.
    #[arg(long, default_value_t = 10)]
    pub num_classes: usize,
    /// Fold each BatchNorm into the convolution before it (inference only).
    #[arg(long)]
    pub fold_bn: bool,
    /// The ONNX file to write.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    pub overwrite: bool,
}

pub(super) fn cmd_init(a: InitArgs) -> Result<()> {
    let m = Model::init(zoo::build(&a.network, a.num_classes)?, a.seed)?;
    claim_model_dir(&a.out, a.overwrite, &[])?;
    save_model(&m, &a.out)?;
    println!("wrote {} ({} parameters) to {}", a.network, m.graph.num_parameters(), a.out.display());
    Ok(())
}

pub(super) fn cmd_import(a: ImportArgs) -> Result<()> {
    let mut m = formats::onnx::load(&a.onnx)?;
    if let (Some(mean), Some(std)) = (a.mean, a.std) {
        m.graph.normalize = Some(crate::ir::Normalize { mean, std });
        m.graph.infer_shapes().context("--mean/--std")?;
    }
    claim_model_dir(&a.out, a.overwrite, &[&a.onnx])?;
    save_model(&m, &a.out)?;
    println!(
        "imported {} ({} nodes, {} parameters) to {}",
        a.onnx.display(),
        m.graph.nodes.len(),
        m.graph.num_parameters(),
        a.out.display()
    );
    Ok(())
}

pub(super) fn cmd_convert_data(a: ConvertDataArgs) -> Result<()> {
    let data_path = crate::data::locate(a.data.as_deref())?;
    outdir::check_not_input(&a.out, "-o", &[&data_path])?;
    outdir::check(&a.out, outdir::Kind::Data, existing(a.overwrite), OVERWRITE_HINT)?;
    if let Some(like) = &a.like {
        outdir::check_not_input(&a.out, "-o", &[like])?;
        let mut model = formats::load_model(&train::RunDir::model_path(like))?;
        let (ds, norm) = super::eval::eval_split(&mut model, Some(&data_path), &a.subset, &a.split)?;
        outdir::claim(&a.out, outdir::Kind::Data, outdir::Existing::Accept, "")?;
        crate::data::write_npy(&ds, &a.out)?;
        native::write_atomic(&a.out.join("normalize.json"), serde_json::to_string_pretty(&norm)?.as_bytes())?;
        let [c, h, w] = ds.shape;
        println!(
            "wrote the {} {} images `edgeprune eval {}` scores ({c} x {h} x {w}) as NumPy files to {}",
            ds.len(),
            a.split,
            like.display(),
            a.out.display()
        );
        return Ok(());
    }
    anyhow::ensure!(a.split == "test", "--split applies with --like only");
    let src = crate::data::Source::detect(&data_path)?;
    let (train, test) = (src.load(crate::data::Split::Train)?, src.load(crate::data::Split::Test)?);
    outdir::claim(&a.out, outdir::Kind::Data, outdir::Existing::Accept, "")?;
    crate::data::write_cifar10_binary(&train, &test, &a.out)?;
    println!(
        "wrote {} train and {} test images in the CIFAR-10 binary format to {}",
        train.len(),
        test.len(),
        a.out.display()
    );
    Ok(())
}

pub(super) fn cmd_export(a: ExportArgs) -> Result<()> {
    outdir::check_not_input(&a.out, "-o", &[Path::new(&a.model)])?;
    outdir::claim_file(&a.out, a.overwrite)?;
    let m = load_spec(&a.model, a.num_classes)?;
    formats::export_onnx(&m, &a.out, a.fold_bn)?;
    println!(
        "exported {} ({} parameters{}) to {}",
        a.model,
        m.graph.num_parameters(),
        if a.fold_bn { ", BatchNorm folded" } else { "" },
        a.out.display()
    );
    Ok(())
}
