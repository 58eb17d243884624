package pop3

import (
	"errors"
	"strings"
	"testing"
)

func TestParseOAuthBearer(t *testing.T) {
	tests := []struct {
		msg, user, token string
		err              error
	}{
		{"n,a=alice@example.com,\x01host=pop.example.com\x01port=995\x01auth=Bearer vF9dft4qmTc2\x01\x01", "alice@example.com", "Bearer vF9dft4qmTc2", nil},
		{"y,a=alice,\x01auth=Bearer t\x01\x01", "alice", "Bearer t", nil},
		{"n,a=a=2Cb=3Dc,\x01auth=Bearer t\x01\x01", "a,b=c", "Bearer t", nil},
		{"n,,\x01auth=Bearer t\x01\x01", "", "", ErrNoOAuthUser},                // no user
		{"n,a=,\x01auth=Bearer t\x01\x01", "", "", ErrNoOAuthUser},              // empty user
		{"n,a=al ice,\x01auth=Bearer t\x01\x01", "", "", ErrNoOAuthUser},        // space
		{"n,a=a=2,\x01auth=Bearer t\x01\x01", "", "", ErrNoOAuthUser},           // bad escape
		{"n,a=a=41,\x01auth=Bearer t\x01\x01", "", "", ErrNoOAuthUser},          // unknown escape
		{"n,a=a\x7fb,\x01auth=Bearer t\x01\x01", "", "", ErrNoOAuthUser},        // control
		{"p=tls-unique,a=alice,\x01auth=Bearer t\x01\x01", "", "", ErrBadOAuth}, // channel binding
		{"n,a=alice\x01auth=Bearer t\x01\x01", "", "", ErrBadOAuth},             // header not closed
		{"n,a=alice,x,\x01auth=Bearer t\x01\x01", "", "", ErrBadOAuth},          // extra field
		{"n,a=alice,\x01host=x\x01\x01", "", "", ErrBadOAuth},                   // no token
		{"n,a=alice,\x01auth=Bearer t\x01", "", "", ErrBadOAuth},                // no final ^A
		{"n,a=alice,\x01auth=Bearer t\x01auth=x\x01\x01", "", "", ErrBadOAuth},  // twice
		{"n,a=alice,", "", "", ErrBadOAuth},
		{"\x01", "", "", ErrBadOAuth}, // the answer to an error challenge
		{"", "", "", ErrBadOAuth},
	}
	for _, tt := range tests {
		user, token, err := ParseOAuthBearer([]byte(tt.msg))
		if user != tt.user || token != tt.token || !errors.Is(err, tt.err) {
			t.Errorf("ParseOAuthBearer(%q) = %q, %q, %v; want %q, %q, %v", tt.msg, user, token, err, tt.user, tt.token, tt.err)
		}
	}
}

func TestParseXOAuth2(t *testing.T) {
	tests := []struct {
		msg, user, token string
		err              error
	}{
		{"user=alice@example.com\x01auth=Bearer ya29.vF9dft4qmTc2\x01\x01", "alice@example.com", "Bearer ya29.vF9dft4qmTc2", nil},
		{"auth=Bearer t\x01user=bob\x01\x01", "bob", "Bearer t", nil},
		{"auth=Bearer t\x01\x01", "", "", ErrNoOAuthUser},
		{"user=\x01auth=Bearer t\x01\x01", "", "", ErrNoOAuthUser},
		{"user=a b\x01auth=Bearer t\x01\x01", "", "", ErrNoOAuthUser},
		{"user=alice\x01\x01", "", "", ErrBadOAuth},
		{"user=alice\x01auth=Bearer t\x01", "", "", ErrBadOAuth},
		{"user=alice\x01auth=Bearer t\x00x\x01\x01", "", "", ErrBadOAuth},
		{"user=alice\x01auth=Bearer t", "", "", ErrBadOAuth},
		{"", "", "", ErrBadOAuth},
	}
	for _, tt := range tests {
		user, token, err := ParseXOAuth2([]byte(tt.msg))
		if user != tt.user || token != tt.token || !errors.Is(err, tt.err) {
			t.Errorf("ParseXOAuth2(%q) = %q, %q, %v; want %q, %q, %v", tt.msg, user, token, err, tt.user, tt.token, tt.err)
		}
	}
}

// FuzzParseOAuthBearer checks that an accepted response names a user that any
// login may carry and a token, and that the user escaped again (RFC 5801 §4)
// in a fresh header reads back the same.
func FuzzParseOAuthBearer(f *testing.F) {
	f.Add([]byte("n,a=alice@example.com,\x01host=h\x01port=995\x01auth=Bearer vF9dft4qmTc2\x01\x01"))
	f.Add([]byte("n,a=a=2Cb=3D,\x01auth=Bearer t\x01\x01"))
	f.Add([]byte("n,,\x01auth=Bearer t\x01\x01"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		user, token, err := ParseOAuthBearer(msg)
		if err != nil {
			return
		}
		if CheckUser(user) != nil || token == "" {
			t.Fatalf("accepted %q: user %q, token %q", msg, user, token)
		}
		escaped := strings.NewReplacer("=", "=3D", ",", "=2C").Replace(user)
		again, _, err := ParseOAuthBearer([]byte("n,a=" + escaped + ",\x01auth=x\x01\x01"))
		if err != nil || again != user {
			t.Fatalf("user %q escaped as %q reads back as %q, %v", user, escaped, again, err)
		}
	})
}

// FuzzParseXOAuth2 checks that an accepted response names a user that any
// login may carry, and a token without the separators.
func FuzzParseXOAuth2(f *testing.F) {
	f.Add([]byte("user=alice@example.com\x01auth=Bearer ya29.vF9dft4qmTc2\x01\x01"))
	f.Add([]byte("user=alice\x01\x01"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		user, token, err := ParseXOAuth2(msg)
		if err != nil {
			return
		}
		if CheckUser(user) != nil || token == "" || strings.ContainsAny(token, "\x00\x01") {
			t.Fatalf("accepted %q: user %q, token %q", msg, user, token)
		}
	})
}
