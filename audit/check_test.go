package audit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckFile(t *testing.T) {
	dir := t.TempDir()
	fresh := filepath.Join(dir, "audit.jsonl")
	if err := CheckFile(fresh); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fresh); !os.IsNotExist(err) {
		t.Errorf("CheckFile left %s behind: %v", fresh, err)
	}

	existing := filepath.Join(dir, "existing.jsonl")
	os.WriteFile(existing, []byte("{\"seq\":1}\n"), 0o600)
	if err := CheckFile(existing); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(existing); string(data) != "{\"seq\":1}\n" {
		t.Errorf("CheckFile changed an existing file: %q", data)
	}

	for path, want := range map[string]string{
		filepath.Join(dir, "missing", "audit.jsonl"): "no such file or directory",
		filepath.Join(existing, "audit.jsonl"):       "not a directory",
		dir:                                          "is a directory",
	} {
		if err := CheckFile(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckFile(%s) = %v, want %q", path, err, want)
		}
	}
}
