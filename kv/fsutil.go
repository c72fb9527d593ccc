package kv

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// mkdirAllSynced creates dir and its missing parents and syncs dir and every
// directory that gained an entry — up to and including the closest ancestor
// that already existed — so the new entries survive a crash.
func mkdirAllSynced(fs vfs.FS, dir string) error {
	// Ancestors of dir, nearest first, up to the closest existing one. The
	// loop stops at the root, whose parent is itself ("/" or ".").
	var parents []string
	for d := dir; ; {
		parent := fs.PathDir(d)
		if parent == d || parent == "" {
			break
		}
		parents = append(parents, parent)
		if _, err := fs.Stat(parent); err == nil {
			break
		}
		d = parent
	}
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := syncDir(fs, dir); err != nil {
		return err
	}
	for _, p := range parents {
		if err := syncDir(fs, p); err != nil {
			return err
		}
	}
	return nil
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
