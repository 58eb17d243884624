package testproc

import (
	"os"
	"path/filepath"
	"testing"
)

// WriteConfig writes a popproxy configuration into a folder of the test's
// and returns its path.
func WriteConfig(t testing.TB, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "popproxy.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
