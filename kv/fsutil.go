package kv

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// mkdirAllSynced creates dir and its missing parents and syncs every
// directory on the path, so the new entries survive a crash.
func mkdirAllSynced(fs vfs.FS, dir string) error {
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for d := dir; ; {
		if err := syncDir(fs, d); err != nil {
			return err
		}
		parent := fs.PathDir(d)
		if parent == d || parent == "" || parent == "." {
			return nil
		}
		d = parent
	}
}

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("open dir %s: %w", dir, err)
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return d.Close()
}
