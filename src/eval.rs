//! Accuracy of f32 and int8 on a labelled image set (`resnet18-fc eval`).
//!
//! Two layouts are read:
//! * a directory of class sub-folders (ImageNet-val layout). A sub-folder named by a number
//!   `0..1000` is that class index. Otherwise the folders are WordNet ids (`n01440764`, …):
//!   ImageNet's class index is the rank of the id among the 1000 sorted ids, so all 1000 must be
//!   present (the full validation set); a partial set should use numeric folders or a CSV;
//! * a CSV file of `file,class_index` lines (paths relative to the CSV's folder; a first line
//!   that does not parse, such as a header, is skipped).
//!
//! Nothing here runs a model: [`Tally`] accumulates the rankings the caller computes.

use std::path::{Path, PathBuf};

use crate::resnet::NUM_CLASSES;

/// Why the labelled set could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Reading a directory or the CSV failed.
    #[error("cannot read {path}: {reason}")]
    Io {
        /// The path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A CSV line is not `file,class_index` with an index below 1000.
    #[error("{path} line {line}: expected `file,class_index` with an index in 0..1000")]
    BadLine {
        /// The CSV file.
        path: String,
        /// 1-based line number.
        line: usize,
    },
    /// Sub-folders that are neither class numbers nor the full set of 1000 WordNet ids.
    #[error(
        "{path}: {folders} class folders that are not numbers 0..1000; WordNet-id folders are \
         mapped to ImageNet indices by rank and need all 1000 (use numeric folders or a CSV \
         `file,class_index` for a subset)"
    )]
    UnmappedFolders {
        /// The directory.
        path: String,
        /// How many non-numeric folders were found.
        folders: usize,
    },
    /// No image was found.
    #[error("{0}: no labelled images found")]
    Empty(String),
}

fn io_error(path: &Path, e: std::io::Error) -> EvalError {
    EvalError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Every `(image path, class index)` of a labelled set, sorted by path.
pub fn collect(path: &Path) -> Result<Vec<(PathBuf, usize)>, EvalError> {
    let mut items = if path.is_dir() {
        from_folders(path)?
    } else {
        from_csv(path)?
    };
    if items.is_empty() {
        return Err(EvalError::Empty(path.display().to_string()));
    }
    items.sort();
    Ok(items)
}

fn from_folders(dir: &Path) -> Result<Vec<(PathBuf, usize)>, EvalError> {
    let mut folders: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        if entry.path().is_dir() {
            folders.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            ));
        }
    }
    folders.sort();
    let numeric = |name: &str| name.parse::<usize>().ok().filter(|&i| i < NUM_CLASSES);
    let named = folders.iter().filter(|(n, _)| numeric(n).is_none()).count();
    if named > 0 && (named != NUM_CLASSES || named != folders.len()) {
        return Err(EvalError::UnmappedFolders {
            path: dir.display().to_string(),
            folders: named,
        });
    }
    let mut items = Vec::new();
    for (rank, (name, folder)) in folders.iter().enumerate() {
        let class = numeric(name).unwrap_or(rank);
        for entry in std::fs::read_dir(folder).map_err(|e| io_error(folder, e))? {
            let file = entry.map_err(|e| io_error(folder, e))?.path();
            if file.is_file() {
                items.push((file, class));
            }
        }
    }
    Ok(items)
}

fn from_csv(csv: &Path) -> Result<Vec<(PathBuf, usize)>, EvalError> {
    let text = std::fs::read_to_string(csv).map_err(|e| io_error(csv, e))?;
    let base = csv.parent().unwrap_or(Path::new("."));
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let parsed = line.rsplit_once(',').and_then(|(file, class)| {
            let class = class.trim().parse::<usize>().ok()?;
            (class < NUM_CLASSES && !file.trim().is_empty()).then(|| (file.trim(), class))
        });
        match parsed {
            Some((file, class)) => items.push((base.join(file), class)),
            None if n == 0 => continue, // header
            None => {
                return Err(EvalError::BadLine {
                    path: csv.display().to_string(),
                    line: n + 1,
                });
            }
        }
    }
    Ok(items)
}

/// Running top-1 / top-5 counts of f32 and int8 and their top-1 agreement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Images ranked by both precisions.
    pub images: usize,
    /// Images that could not be read or decoded.
    pub failed: usize,
    /// f32 top-1 correct.
    pub f32_top1: usize,
    /// f32 top-5 correct.
    pub f32_top5: usize,
    /// int8 top-1 correct.
    pub int8_top1: usize,
    /// int8 top-5 correct.
    pub int8_top5: usize,
    /// Same top-1 class from both.
    pub agree: usize,
}

impl Tally {
    /// Adds one image: its true class and the five best classes of each precision, best first.
    pub fn add(&mut self, truth: usize, f32_top5: &[usize], int8_top5: &[usize]) {
        self.images += 1;
        self.f32_top1 += usize::from(f32_top5.first() == Some(&truth));
        self.f32_top5 += usize::from(f32_top5.iter().take(5).any(|&c| c == truth));
        self.int8_top1 += usize::from(int8_top5.first() == Some(&truth));
        self.int8_top5 += usize::from(int8_top5.iter().take(5).any(|&c| c == truth));
        self.agree += usize::from(!f32_top5.is_empty() && f32_top5.first() == int8_top5.first());
    }

    /// `count` as a percentage of the ranked images (0 when none).
    pub fn percent(&self, count: usize) -> f64 {
        if self.images == 0 {
            0.0
        } else {
            100.0 * count as f64 / self.images as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn numeric_folders_are_class_indices() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("281/a.jpg"));
        touch(&dir.path().join("281/b.jpg"));
        touch(&dir.path().join("7/c.png"));
        let items = collect(dir.path()).unwrap();
        let classes: Vec<usize> = items.iter().map(|(_, c)| *c).collect();
        assert_eq!(classes, vec![281, 281, 7]);
        assert!(items[2].0.ends_with("7/c.png"));
    }

    #[test]
    fn wordnet_folders_need_the_full_thousand_and_map_by_rank() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("n01440764/a.jpg"));
        touch(&dir.path().join("n01443537/b.jpg"));
        let err = collect(dir.path()).unwrap_err();
        assert!(
            matches!(err, EvalError::UnmappedFolders { folders: 2, .. }),
            "{err}"
        );
        for i in 2..NUM_CLASSES {
            std::fs::create_dir(dir.path().join(format!("n9{i:07}"))).unwrap();
        }
        touch(&dir.path().join(format!("n9{:07}/z.jpg", 999)));
        let items = collect(dir.path()).unwrap();
        let classes: Vec<usize> = items.iter().map(|(_, c)| *c).collect();
        assert_eq!(classes, vec![0, 1, 999]);
    }

    #[test]
    fn csv_lines_are_relative_to_the_csv_and_a_header_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("labels.csv");
        std::fs::write(&csv, "file,class_index\nimgs/a.jpg,281\n\nb,c.jpg, 3\n").unwrap();
        let items = collect(&csv).unwrap();
        assert_eq!(
            items,
            vec![
                (dir.path().join("b,c.jpg"), 3),
                (dir.path().join("imgs/a.jpg"), 281)
            ]
        );
        std::fs::write(&csv, "a.jpg,1\nb.jpg,1000\n").unwrap();
        assert!(matches!(
            collect(&csv),
            Err(EvalError::BadLine { line: 2, .. })
        ));
        std::fs::write(&csv, "file,class\n").unwrap();
        assert!(matches!(collect(&csv), Err(EvalError::Empty(_))));
    }

    #[test]
    fn tally_counts_top1_top5_and_agreement() {
        let mut t = Tally::default();
        t.add(5, &[5, 1, 2, 3, 4], &[1, 5, 2, 3, 4]); // f32 top-1, int8 top-5 only
        t.add(9, &[1, 2, 3, 4, 9], &[1, 2, 3, 4, 6]); // f32 top-5 only; same top-1
        t.add(0, &[7, 8, 1, 2, 3], &[7, 0, 1, 2, 3]);
        assert_eq!(
            t,
            Tally {
                images: 3,
                failed: 0,
                f32_top1: 1,
                f32_top5: 2,
                int8_top1: 0,
                int8_top5: 2,
                agree: 2,
            }
        );
        assert!((t.percent(t.agree) - 66.666).abs() < 0.01);
        assert_eq!(Tally::default().percent(0), 0.0);
    }
}
