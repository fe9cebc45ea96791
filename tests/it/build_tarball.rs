//! The deterministic template writer, read back with the `tar` crate and GNU tar.
//!
//! A small tree with every kind of entry (directories, files, a symlink, a
//! hard link, a FIFO, a long name, an allowed and a dropped xattr) is packed
//! and checked member by member; two packs of copies of the tree made in
//! different places, with different mtimes, give the same bytes.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use haimg::build::hash::sha256_file;
use haimg::build::tarball::{pack, PackOptions, Packed};

const SDE: u64 = 1_700_000_000;

fn tree(root: &Path) {
    std::fs::create_dir_all(root.join("etc/haimg")).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::create_dir_all(root.join("dev")).unwrap();
    std::fs::write(root.join("etc/debian_version"), "12.15\n").unwrap();
    std::fs::write(root.join("etc/haimg/role"), "lb\n").unwrap();
    std::fs::write(root.join("usr/bin/tool"), vec![7u8; 70_000]).unwrap();
    std::fs::set_permissions(
        root.join("usr/bin/tool"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool-alias")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    let long = "d".repeat(60);
    std::fs::create_dir_all(root.join(&long)).unwrap();
    std::fs::write(root.join(&long).join("f".repeat(80)), "long").unwrap();
    let fifo = root.join("dev/fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: c is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let _ = xattr::set(root.join("etc/haimg/role"), "user.haimg", b"kept");
    let _ = xattr::set(
        root.join("etc/debian_version"),
        "trusted.secret",
        b"dropped",
    );
}

fn pack_tree(root: &Path, out: &Path) -> Packed {
    pack(
        root,
        out,
        PackOptions {
            source_date_epoch: SDE,
            zstd_level: 3,
            workers: 2,
        },
        &|_| {},
    )
    .unwrap()
}

#[test]
fn members_are_sorted_dot_slash_numeric_and_clamped() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    tree(&root);
    let out = d.path().join("t.tar.zst");
    let packed = pack_tree(&root, &out);
    assert_eq!(packed.skipped_special, ["./dev/fifo"]);

    let dec = zstd::stream::read::Decoder::new(std::fs::File::open(&out).unwrap()).unwrap();
    let mut ar = tar::Archive::new(dec);
    let mut names = Vec::new();
    let mut saw_xattr = false;
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let raw = e.path_bytes().into_owned();
        let name = String::from_utf8(raw).unwrap();
        let h = e.header();
        assert!(h.mtime().unwrap() <= SDE, "{name} not clamped");
        assert_eq!(h.username().unwrap(), Some(""), "{name} has an owner name");
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
        if let Some(ext) = e.pax_extensions().unwrap() {
            for x in ext {
                let x = x.unwrap();
                assert_eq!(x.key().unwrap(), "SCHILY.xattr.user.haimg");
                assert_eq!(x.value_bytes(), b"kept");
                saw_xattr = true;
            }
        }
        if name == "./usr/bin/tool-alias" {
            assert_eq!(e.header().entry_type(), tar::EntryType::Link);
            assert_eq!(e.link_name_bytes().unwrap().as_ref(), b"./usr/bin/tool");
        }
        if name == "./usr/bin/tool" {
            assert_eq!(e.header().mode().unwrap(), 0o4755);
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            assert_eq!(v.len(), 70_000);
        }
        names.push(name);
    }
    let xattrs_supported = xattr::get(root.join("etc/haimg/role"), "user.haimg")
        .ok()
        .flatten()
        .is_some();
    assert_eq!(saw_xattr, xattrs_supported);
    assert!(names.iter().all(|n| n.starts_with("./")), "{names:?}");
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "members are not sorted bytewise");
    assert_eq!(names[0], "./");
    assert!(names.contains(&"./dev/".to_string()));
    assert!(!names
        .iter()
        .any(|n| n.starts_with("./dev/") && n != "./dev/"));
    let long = format!("./{}/{}", "d".repeat(60), "f".repeat(80));
    assert!(names.contains(&long), "long name missing: {names:?}");
    assert!(names.contains(&"./bin".to_string()));

    // The manifest has one line per member, in the same order.
    let lines: Vec<&str> = packed.manifest.lines().collect();
    assert_eq!(lines.len(), names.len());
    assert_eq!(lines[0], "./ d 0755 0 0 0 - -");
    assert!(lines.contains(&"./bin l 0777 0 0 0 - usr/bin"));
    assert!(lines.contains(&"./usr/bin/tool-alias h 4755 0 0 0 - ./usr/bin/tool"));
    let sha = haimg::build::hash::sha256_hex(b"12.15\n");
    assert!(lines.contains(&format!("./etc/debian_version f 0644 0 0 6 {sha} -").as_str()));
    assert!(packed
        .dropped_xattrs
        .iter()
        .all(|x| x.ends_with("trusted.secret")));
}

#[test]
fn gnu_tar_extracts_it() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    tree(&root);
    let out = d.path().join("t.tar.zst");
    pack_tree(&root, &out);
    let x = d.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let st = Command::new("tar")
        .args([
            "--zstd",
            "--xattrs",
            "--xattrs-include=user.*",
            "--xattrs-include=security.capability",
            "-xf",
        ])
        .arg(&out)
        .arg("-C")
        .arg(&x)
        .status();
    let Ok(st) = st else {
        crate::support::skip("build_tarball", "GNU tar is not installed (`make setup`)");
        return;
    };
    assert!(st.success());
    assert_eq!(
        std::fs::read_to_string(x.join("etc/debian_version")).unwrap(),
        "12.15\n"
    );
    assert_eq!(
        std::fs::read_link(x.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert_eq!(
        std::fs::read(x.join(format!("{}/{}", "d".repeat(60), "f".repeat(80)))).unwrap(),
        b"long"
    );
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(x.join("usr/bin/tool")).unwrap();
    let b = std::fs::metadata(x.join("usr/bin/tool-alias")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard link not preserved");
    assert_eq!(a.mtime() as u64, SDE.min(a.mtime() as u64));
    assert!(!x.join("dev/fifo").exists());
}

#[test]
fn same_tree_elsewhere_later_gives_the_same_bytes() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::Builder::new()
        .prefix("other-place")
        .tempdir()
        .unwrap();
    tree(&d1.path().join("r"));
    // Different creation order and mtimes (now vs. clamped), same content.
    std::fs::create_dir_all(d2.path().join("nested/r")).unwrap();
    let r2 = d2.path().join("nested/r");
    std::fs::remove_dir(&r2).unwrap();
    tree(&r2);
    let f = std::fs::File::open(r2.join("etc/debian_version")).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(SDE + 10_000))
        .unwrap();
    let a = pack_tree(&d1.path().join("r"), &d1.path().join("a.tar.zst"));
    let b = pack_tree(&r2, &d2.path().join("b.tar.zst"));
    assert_eq!(a.manifest, b.manifest);
    assert_eq!(a.sha256, b.sha256);
    assert_eq!(a.sha256, sha256_file(&d1.path().join("a.tar.zst")).unwrap());
}

#[test]
fn zstd_output_does_not_depend_on_the_worker_count() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("r");
    tree(&root);
    // Enough data for several zstd jobs.
    std::fs::write(
        root.join("big"),
        (0..12_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let mut shas = Vec::new();
    for workers in [1, 2, 4] {
        let out = d.path().join(format!("w{workers}.tar.zst"));
        let p = pack(
            &root,
            &out,
            PackOptions {
                source_date_epoch: SDE,
                zstd_level: 3,
                workers,
            },
            &|_| {},
        )
        .unwrap();
        shas.push(p.sha256);
    }
    assert_eq!(shas[0], shas[1]);
    assert_eq!(shas[1], shas[2]);
}
