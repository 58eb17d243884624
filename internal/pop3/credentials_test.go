package pop3

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckCredentials(t *testing.T) {
	good := [][3]string{
		{"", "alice", "secret"},
		{"", "j\u00f6rg@example.org", "pass word with spaces"},
		{"shared", "admin", "\u00e4\u00f6\u00fc\u00df"},
		{"", strings.Repeat("u", MaxUserLen), strings.Repeat("p", MaxPasswordLen)},
	}
	for _, c := range good {
		if err := CheckCredentials(c[0], c[1], c[2]); err != nil {
			t.Errorf("CheckCredentials(%q) = %v", c, err)
		}
	}
	bad := []struct {
		authzid, user, pass string
		why                 string
	}{
		{"", "", "pw", "user name is empty"},
		{"", "alice", "", "password is empty"},
		{"", strings.Repeat("u", MaxUserLen+1), "pw", "user name is longer than 255 octets"},
		{"", "alice", strings.Repeat("p", MaxPasswordLen+1), "password is longer than 1024 octets"},
		{"", "al\xffice", "pw", "user name is not valid UTF-8"},
		{"", "alice", "p\xc3w", "password is not valid UTF-8"},
		{"", "al\x00ice", "pw", "user name holds a control character"},
		{"", "alice", "p\rw", "password holds a control character"},
		{"", "alice", "p\nQUIT", "password holds a control character"},
		{"", "alice", "p\tw", "password holds a control character"},
		{"", "alice", "pw\x7f", "password holds a control character"},
		{"", "al ice", "pw", "user name holds a space"},
		{"a\x01", "alice", "pw", "authorization identity holds a control character"},
		{"a b", "alice", "pw", "authorization identity holds a space"},
		{strings.Repeat("z", MaxUserLen+1), "alice", "pw", "authorization identity is longer than 255 octets"},
	}
	for _, tt := range bad {
		err := CheckCredentials(tt.authzid, tt.user, tt.pass)
		if !errors.Is(err, ErrBadCredentials) || err.Error() != "invalid credentials: "+tt.why {
			t.Errorf("CheckCredentials(%q, %q, %q) = %v, want %q", tt.authzid, tt.user, tt.pass, err, tt.why)
		}
	}
}
