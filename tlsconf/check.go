package tlsconf

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// Check loads what New would, without starting anything, for a
// configuration test such as `popproxy -check`: every certificate file and
// its key (and that they belong together), and with ACME the trusted roots
// file and the storage folder, which must be writable (or creatable). Like
// New it logs a warning for a certificate outside its validity period. What
// only the start can tell is left: whether the ACME CA issues. If log is nil,
// slog.Default() is used.
func Check(cfg Config, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	if _, err := parseServerVersion(cfg.MinVersion); err != nil {
		return err
	}
	m := &Manager{log: log, files: cfg.Certificates}
	if _, err := m.loadStatic(); err != nil {
		return err
	}
	if a := cfg.ACME; a != nil {
		if _, err := trustedRoots(a.TrustedRootsFile); err != nil {
			return err
		}
		if err := checkWritable(a.Storage); err != nil {
			return fmt.Errorf("tlsconf: ACME storage: %w", err)
		}
	}
	return nil
}

// checkWritable reports whether a file can be created in the folder dir, or,
// if dir does not exist yet, in the nearest folder above it, where
// certmagic's FileStorage will create it. It leaves nothing behind.
func checkWritable(dir string) error {
	for {
		info, err := os.Stat(dir)
		if errors.Is(err, fs.ErrNotExist) && filepath.Dir(dir) != dir {
			dir = filepath.Dir(dir)
			continue
		}
		if err != nil {
			return err
		}
		if !info.IsDir() {
			return fmt.Errorf("%s is not a folder", dir)
		}
		break
	}
	f, err := os.CreateTemp(dir, ".popproxy-check-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}
