package ratelimit

import "testing"

func TestFingerprinter(t *testing.T) {
	f := NewFingerprinter()
	if f.Of("alice", "secret") != f.Of("alice", "secret") {
		t.Error("one input, two fingerprints")
	}
	for _, other := range [][]string{{"alice", "secret2"}, {"alic", "esecret"}, {"alicesecret"}, {"bob", "secret"}} {
		if f.Of("alice", "secret") == f.Of(other...) {
			t.Errorf("%q has the fingerprint of alice, secret", other)
		}
	}
	if NewFingerprinter().Of("alice", "secret") == f.Of("alice", "secret") {
		t.Error("two Fingerprinters share a key")
	}
}
