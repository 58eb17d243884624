package pop3

import "testing"

func TestTimestamp(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"Solid POP3 server ready <1896.697170952@dbc.mtview.ca.us>", "<1896.697170952@dbc.mtview.ca.us>"},
		{"popproxy ready 0123abcd <17.42@mail>", "<17.42@mail>"},
		{"POP3 server ready <a@b> <c@d>", "<a@b>"},
		{"ready", ""},
		{"", ""},
		{"ready <no-at-sign>", ""},
		{"ready <@host>", ""},
		{"ready <user@>", ""},
		{"ready <a<b@c>", ""},
		{"ready <a\x01b@c>", ""},
		{"ready <ä@c>", ""},
	} {
		got, ok := Timestamp(tc.text)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("Timestamp(%q) = %q, %v; want %q", tc.text, got, ok, tc.want)
		}
	}
}

func TestIsAPOPDigest(t *testing.T) {
	for s, want := range map[string]bool{
		"c4c9334bac560ecc979e58001b3e22fb":  true, // RFC 1939 §7's example
		"C4C9334BAC560ECC979E58001B3E22FB":  true,
		"c4c9334bac560ecc979e58001b3e22f":   false,
		"c4c9334bac560ecc979e58001b3e22fbb": false,
		"g4c9334bac560ecc979e58001b3e22fb":  false,
		"":                                  false,
	} {
		if got := IsAPOPDigest(s); got != want {
			t.Errorf("IsAPOPDigest(%q) = %v, want %v", s, got, want)
		}
	}
}
