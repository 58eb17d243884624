package tlsconf

import (
	"os"
	"testing"
)

// rotate overwrites dst's files with src's.
func rotate(t *testing.T, dst, src pair) {
	t.Helper()
	for _, f := range [][2]string{{src.CertFile.CertFile, dst.CertFile.CertFile}, {src.KeyFile, dst.KeyFile}} {
		data, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1], data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	live := writePair(t, dir, "live", "mail.example.test") // cert A, in the configured files
	next := writePair(t, dir, "next", "mail.example.test") // cert B, staged elsewhere
	m := newManager(t, Config{Certificates: []CertFile{live.CertFile}})
	srv := startEcho(t, m.ServerConfig())

	if got := peerLeaf(t, srv.addr, "mail.example.test"); !sameCert(got, live.leaf) {
		t.Fatal("before Reload: not serving A")
	}
	// A connection opened before the rotation.
	old, err := dial(srv.addr, insecure("mail.example.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	echo(t, old, "USER a\r\n")

	rotate(t, live, next)
	if got := peerLeaf(t, srv.addr, "mail.example.test"); !sameCert(got, live.leaf) {
		t.Fatal("files changed but no Reload: should still serve A")
	}
	if err := m.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := peerLeaf(t, srv.addr, "mail.example.test"); !sameCert(got, next.leaf) {
		t.Fatal("after Reload: not serving B")
	}
	echo(t, old, "PASS b\r\n") // the old connection is unaffected
	if !sameCert(old.ConnectionState().PeerCertificates[0], live.leaf) {
		t.Error("old connection's peer certificate changed")
	}
	if got := m.NotAfter()["mail.example.test"]; !got.Equal(next.leaf.NotAfter) {
		t.Errorf("NotAfter after Reload = %v, want B's %v", got, next.leaf.NotAfter)
	}

	// A garbage certificate file: Reload fails naming it, B stays.
	if err := os.WriteFile(live.CertFile.CertFile, []byte("-----BEGIN GARBAGE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantErrContains(t, m.Reload(), live.CertFile.CertFile)
	if got := peerLeaf(t, srv.addr, "mail.example.test"); !sameCert(got, next.leaf) {
		t.Fatal("after a failed Reload: not serving B any more")
	}
	// A missing key file: same.
	if err := os.Remove(live.KeyFile); err != nil {
		t.Fatal(err)
	}
	wantErrContains(t, m.Reload(), live.KeyFile)
	echo(t, old, "QUIT\r\n")
}

// TestReloadGarbageKeepsFirst is the brief's case: start with A, a garbage
// replacement leaves A in place.
func TestReloadGarbageKeepsFirst(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := writePair(t, dir, "a", "mail.example.test")
	m := newManager(t, Config{Certificates: []CertFile{a.CertFile}})
	srv := startEcho(t, m.ServerConfig())
	if err := os.WriteFile(a.KeyFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	wantErrContains(t, m.Reload(), a.KeyFile)
	if got := peerLeaf(t, srv.addr, ""); !sameCert(got, a.leaf) {
		t.Fatal("after a failed Reload: not serving A")
	}
}

// TestReloadAllOrNothing: one good and one bad new file leave both old
// certificates in place.
func TestReloadAllOrNothing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := writePair(t, dir, "a", "a.example.test")
	b := writePair(t, dir, "b", "b.example.test")
	a2 := writePair(t, dir, "a2", "a.example.test")
	m := newManager(t, Config{Certificates: []CertFile{a.CertFile, b.CertFile}, SelfSigned: []string{"self.example.test"}})
	srv := startEcho(t, m.ServerConfig())
	self := peerLeaf(t, srv.addr, "self.example.test")

	rotate(t, a, a2)
	if err := os.WriteFile(b.CertFile.CertFile, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantErrContains(t, m.Reload(), b.CertFile.CertFile)
	if got := peerLeaf(t, srv.addr, "a.example.test"); !sameCert(got, a.leaf) {
		t.Error("a.example.test changed although Reload failed")
	}
	if got := peerLeaf(t, srv.addr, "b.example.test"); !sameCert(got, b.leaf) {
		t.Error("b.example.test changed although Reload failed")
	}

	// Fix b; now both apply, and the self-signed certificate is kept.
	b2 := writePair(t, dir, "b2", "b.example.test")
	rotate(t, b, b2)
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := peerLeaf(t, srv.addr, "a.example.test"); !sameCert(got, a2.leaf) {
		t.Error("a.example.test not rotated")
	}
	if got := peerLeaf(t, srv.addr, "b.example.test"); !sameCert(got, b2.leaf) {
		t.Error("b.example.test not rotated")
	}
	if got := peerLeaf(t, srv.addr, "self.example.test"); !sameCert(got, self) {
		t.Error("self-signed certificate changed on Reload")
	}
}
