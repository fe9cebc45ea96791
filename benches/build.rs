//! `cargo bench --bench build` (root; the Debian mirror or a warm download
//! cache): the three `make bench` measurements, side by side in
//! one run, printed as a table with ratios.
//!
//! (a) a cold `haimg build --role lb --no-cache` (downloads cached, template
//!     cache bypassed) vs plain `mmdebstrap` of the same package set
//!     (minbase + the recipe's packages, merged /usr, `.tar.zst` output);
//! (b) haimg's tar+zstd writer vs `tar --sort=name … | zstd -T0` at the same
//!     level on the same tree (the lb root filesystem), throughput over the
//!     uncompressed tar size;
//! (c) a warm no-op `haimg build --role lb`.
//!
//! Wall-clock times on a shared machine; run it more than once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use haimg::build::tarball::{pack, PackOptions};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn timed(what: &str, cmd: &mut Command) -> f64 {
    eprintln!("bench: {what} …");
    let t = Instant::now();
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        panic!("{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    eprintln!("bench: {what}: {secs:.1} s");
    secs
}

fn haimg(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_haimg"));
    c.arg("build").args(args).current_dir(root());
    c
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and must not build images.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("bench: skipped: needs root (mmdebstrap --mode=root)");
        return;
    }
    let work = tempfile::Builder::new()
        .prefix("haimg-bench-")
        .tempdir()
        .unwrap();
    let w = work.path();
    let out = w.join("out");
    let out_s = out.to_str().unwrap();
    let recipe = haimg::build::recipe::Recipe::load(&root(), haimg::model::Role::Lb).unwrap();
    let level = recipe.raw.zstd_level;
    let lock = haimg::build::lock::Lock::load(&root(), haimg::model::Role::Lb)
        .unwrap()
        .unwrap()
        .0;

    // Make sure the init and the downloads are in place, so (a) measures the build.
    timed(
        "warm-up (init, downloads)",
        haimg(&["--role", "lb", "--out", out_s]).env("TMPDIR", w),
    );

    // (a) cold lb build vs plain mmdebstrap with the same packages.
    let cold = timed(
        "(a) haimg build --role lb --no-cache",
        haimg(&["--role", "lb", "--no-cache", "--out", out_s]).env("TMPDIR", w),
    );
    let mut mm = Command::new("mmdebstrap");
    mm.args(["--mode=root", "--variant=minbase", "--architectures=amd64"])
        .arg(format!(
            "--setup-hook={}",
            haimg::build::rootfs::MERGED_USR_HOOK
        ))
        .arg(format!(
            "--include={}",
            ["usr-is-merged".to_string()]
                .iter()
                .chain(&recipe.raw.packages)
                .cloned()
                .collect::<Vec<_>>()
                .join(",")
        ))
        .arg(&recipe.raw.suite)
        .arg(w.join("plain.tar.zst"))
        .args(recipe.apt_lines("/nonexistent"))
        .env("SOURCE_DATE_EPOCH", lock.source_date_epoch.to_string())
        .env("TMPDIR", w);
    let plain = timed(
        "(a) plain mmdebstrap minbase + packages → .tar.zst",
        &mut mm,
    );

    // (b) the writer vs GNU tar | zstd -T0 on the same tree.
    let tree = w.join("tree");
    std::fs::create_dir(&tree).unwrap();
    let tpl = out.join(format!("haimg-lb_{}_amd64.tar.zst", version()));
    timed(
        "extract the lb template",
        Command::new("tar")
            .arg("--zstd")
            .arg("-xf")
            .arg(&tpl)
            .arg("-C")
            .arg(&tree),
    );
    eprintln!("bench: (b) haimg writer (tar + zstd -{level}) …");
    let t = Instant::now();
    let packed = pack(
        &tree,
        &w.join("haimg.tar.zst"),
        PackOptions {
            source_date_epoch: lock.source_date_epoch,
            zstd_level: level,
            workers: 2,
        },
        &|_| {},
    )
    .unwrap();
    let ours = t.elapsed().as_secs_f64();
    let gnu_out = w.join("gnu.tar.zst");
    let gnu = timed(
        &format!("(b) tar --sort=name | zstd -T0 -{level}"),
        Command::new("sh").arg("-c").arg(format!(
            "tar --sort=name --format=gnu --numeric-owner --owner=0 --group=0 --mtime=@{} --clamp-mtime -C {} -cf - . | zstd -q -T0 -{level} -o {}",
            lock.source_date_epoch,
            tree.display(),
            gnu_out.display()
        )),
    );

    // (c) warm no-op rebuild.
    let warm = timed(
        "(c) haimg build --role lb (nothing changed)",
        haimg(&["--role", "lb", "--out", out_s]).env("TMPDIR", w),
    );

    let mb = |b: u64| b as f64 / 1e6;
    let tar_mb = mb(packed.tar_size);
    println!(
        "\nhaimg build benchmarks (lb; {} cores; wall clock)\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "{:<58} {:>9} {:>9} {:>7}",
        "measurement", "haimg", "baseline", "ratio"
    );
    println!(
        "{:<58} {:>8.1}s {:>8.1}s {:>6.2}x",
        "(a) cold lb build vs plain mmdebstrap, same packages",
        cold,
        plain,
        cold / plain
    );
    println!(
        "{:<58} {:>6.1}MB/s {:>6.1}MB/s {:>6.2}x",
        format!("(b) tar+zstd -{level} throughput ({tar_mb:.0} MB tar)"),
        tar_mb / ours,
        tar_mb / gnu,
        (tar_mb / ours) / (tar_mb / gnu)
    );
    println!(
        "{:<58} {:>8.1}s {:>8.1}s {:>6.3}x",
        "(c) warm no-op rebuild vs cold build",
        warm,
        cold,
        warm / cold
    );
    println!("\nsizes: haimg lb template {:.1} MB (zstd -{level}); same tree via GNU tar|zstd {:.1} MB; plain mmdebstrap .tar.zst (zstd default level, docs/locales kept) {:.1} MB",
        mb(size(&tpl)), mb(size(&gnu_out)), mb(size(&w.join("plain.tar.zst"))));
}

fn version() -> String {
    let text = std::fs::read_to_string(root().join("haimg.yaml")).unwrap();
    haimg::model::spec::parse_yaml(&text)
        .unwrap()
        .cluster
        .version
}
