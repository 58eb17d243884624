package proxy

import (
	"slices"
	"testing"
)

// TestVerbTableDerives adds a verb to the table and finds it everywhere the
// table is read from: the configuration's reserved verbs, the metrics'
// labels, the CAPA filter and the audit's message-naming commands. (The
// config and metrics tests check that they use ReservedVerbs and
// TransactionVerbs as they are.)
func TestVerbTableDerives(t *testing.T) {
	verbs["XTEST"] = verb{in: inTransaction, args: numbers(1, 1), multi: alwaysMulti, capa: "XTEST", audit: auditMessage}
	defer delete(verbs, "XTEST")

	if !slices.Contains(ReservedVerbs(), "XTEST") {
		t.Errorf("ReservedVerbs() = %v, without XTEST", ReservedVerbs())
	}
	if !slices.Contains(TransactionVerbs(), "XTEST") {
		t.Errorf("TransactionVerbs() = %v, without XTEST", TransactionVerbs())
	}
	if c, ok := filterCapability("xtest 1"); !ok || c != "XTEST 1" {
		t.Errorf("filterCapability(%q) = %q, %v; want XTEST 1, true", "xtest 1", c, ok)
	}
	if !namesMessage("XTEST") {
		t.Error("namesMessage(XTEST) = false")
	}
}

// TestVerbTable checks the table's own consistency: what a state allows has
// a handler there, or is relayed with checked arguments.
func TestVerbTable(t *testing.T) {
	for name, v := range verbs {
		if v.in&inAuthorization != 0 && v.auth == nil {
			t.Errorf("%s: allowed before login without a handler", name)
		}
		if v.in&inAuthorization == 0 && v.auth != nil || v.in&inTransaction == 0 && v.transaction != nil {
			t.Errorf("%s: a handler for a state it is not allowed in", name)
		}
		if v.in&inTransaction != 0 && v.transaction == nil && (!v.args.checked || v.multi == 0) {
			t.Errorf("%s: relayed without an argument rule or a multi-line rule", name)
		}
	}
	want := []string{"CAPA", "DELE", "LIST", "NOOP", "QUIT", "RETR", "RSET", "STAT", "TOP", "UIDL"}
	if got := TransactionVerbs(); !slices.Equal(got, want) {
		t.Errorf("TransactionVerbs() = %v, want %v", got, want)
	}
	for _, tag := range []string{"TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE", "LOGIN-DELAY"} {
		if !relayableCapability(tag) {
			t.Errorf("capability %s not relayed", tag)
		}
	}
	for _, tag := range []string{"STLS", "SASL", "IMPLEMENTATION", "UTF8", "LANG", "XFOO", ""} {
		if relayableCapability(tag) {
			t.Errorf("capability %q relayed", tag)
		}
	}
}
