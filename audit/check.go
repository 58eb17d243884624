package audit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// CheckFile reports whether OpenFile could open the file at path, for a
// configuration test such as `popproxy -check`: it opens the file for
// appending exactly as OpenFile does (same flags, same mode 0600, so the same
// folder and permissions decide), reads it as OpenFile reads its tail, and
// removes it again if it did not exist. Nothing is written.
func CheckFile(path string) error {
	_, err := os.Stat(path)
	created := errors.Is(err, fs.ErrNotExist)
	f, err := openAppend(path)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	f.Close()
	if created {
		return os.Remove(path)
	}
	r, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return r.Close()
}
