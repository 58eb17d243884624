package ratelimit

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
)

// Fingerprint stands for a secret, such as the password of a failed login,
// among a key's recent failures (see Failures.Fail), so that a secret tried
// again can be told from a new one without keeping the secret.
//
// It is the first 64 bits of an HMAC-SHA256 under the key of the
// Fingerprinter that made it. That key is random and stays in memory, so a
// fingerprint means nothing outside the process, and nobody can tell from it
// whether a guess is the secret, nor make two secrets collide. 64 bits are
// plenty to tell apart the few secrets one key remembers: by accident, two
// differ in all but one in 2^64, and then one failure goes uncounted.
type Fingerprint uint64

// Fingerprinter makes Fingerprints under a key drawn at random by
// NewFingerprinter, never stored nor shown. The zero Fingerprinter is not
// usable.
type Fingerprinter struct {
	key []byte
}

// NewFingerprinter returns a Fingerprinter with a new random key. Keep one per
// process: fingerprints of different Fingerprinters never match.
func NewFingerprinter() *Fingerprinter {
	key := make([]byte, sha256.Size)
	rand.Read(key) // crypto/rand.Read never fails (Go 1.24)
	return &Fingerprinter{key: key}
}

// NewFingerprinterKey returns a Fingerprinter with the given key, for
// processes that must agree on fingerprints (a fleet sharing its failed-login
// counts). Keep the key as secret as the fingerprints' meaning must be.
func NewFingerprinterKey(key []byte) *Fingerprinter {
	return &Fingerprinter{key: append([]byte(nil), key...)}
}

// Of returns the fingerprint of parts taken together. Each part is prefixed
// with its length, so ("ab", "c") and ("a", "bc") differ.
func (f *Fingerprinter) Of(parts ...string) Fingerprint {
	m := hmac.New(sha256.New, f.key)
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		m.Write(n[:])
		m.Write([]byte(p))
	}
	return Fingerprint(binary.BigEndian.Uint64(m.Sum(nil)))
}
