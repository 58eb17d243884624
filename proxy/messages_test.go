package proxy

import (
	"strings"
	"testing"
)

// TestMessageIDsBounded checks that the Message-IDs a session keeps for its
// DELE records stay within maxKnownIDOctets, however many long ones pass.
func TestMessageIDsBounded(t *testing.T) {
	var m messages
	id := "<" + strings.Repeat("x", 996) + ">"
	for n := 1; n <= 1000; n++ {
		m.learnMessageID(n, id)
	}
	total := 0
	for _, info := range m.known {
		total += len(info.messageID)
	}
	if total != m.idOctets || total > maxKnownIDOctets || total < maxKnownIDOctets-len(id) {
		t.Errorf("%d octets of Message-IDs kept (counted %d), bound %d", total, m.idOctets, maxKnownIDOctets)
	}
	m.learnMessageID(1, "<short@test>") // replacing one frees room
	if got := m.get(1).messageID; got != "<short@test>" {
		t.Errorf("message 1's Message-ID %q", got)
	}
	if m.idOctets != total-len(id)+len("<short@test>") {
		t.Errorf("counted %d octets after a replacement", m.idOctets)
	}
}
