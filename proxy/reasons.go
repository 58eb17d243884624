package proxy

// CloseReason says how a session ended: the reason of its session.close
// record and of the popproxy_session_closes_total metric.
type CloseReason string

// How sessions end.
const (
	CloseQuit          CloseReason = "quit"          // the client's QUIT
	CloseClientClosed  CloseReason = "client_closed" // the client closed the connection
	CloseClientGone    CloseReason = "client_gone"   // reading from or writing to the client failed
	CloseTimeout       CloseReason = "timeout"       // silent after login for the idle timeout
	CloseLoginTimeout  CloseReason = "login_timeout" // not logged in within the login timeout
	CloseShutdown      CloseReason = "shutdown"      // the server shut down
	CloseUpstream      CloseReason = "upstream_failed"
	CloseTooManyErrors CloseReason = "too_many_errors"
	CloseAPOPFailed    CloseReason = "apop_failed" // the timestamp the client answered was that upstream connection's
	CloseLineTooLong   CloseReason = "line_too_long"
	CloseTLSFailed     CloseReason = "tls_failed" // the STLS handshake
	CloseSTLSInjection CloseReason = "stls_injection"
	CloseAuditFailed   CloseReason = "audit_failed"
	CloseInternalError CloseReason = "internal_error" // a bug, contained to the session
	// Connections that never become sessions: they have no session.close
	// record, but these reasons are how they end.
	closeLimit         CloseReason = "limit"
	closeACMEChallenge CloseReason = "acme_challenge"
)

// CloseReasons are the reasons a session.close record may carry.
var CloseReasons = []CloseReason{
	CloseQuit, CloseClientClosed, CloseClientGone, CloseTimeout, CloseLoginTimeout, CloseShutdown,
	CloseUpstream, CloseTooManyErrors, CloseAPOPFailed, CloseLineTooLong, CloseTLSFailed,
	CloseSTLSInjection, CloseAuditFailed, CloseInternalError,
}

// Rule names what the proxy refused: the rule of a policy record and of the
// popproxy_policy_refusals_total metric.
type Rule string

// What the proxy refuses.
const (
	RuleSyntax         Rule = "syntax"
	RuleWrongState     Rule = "wrong_state"
	RuleUnknownCommand Rule = "unknown_command"
	RuleUnsupported    Rule = "unsupported"
	RuleLineTooLong    Rule = "line_too_long"
	RuleRoute          Rule = "route" // a user name no route leads to
	RuleTLSRequired    Rule = "tls_required"
	RuleTLSHandshake   Rule = "tls_handshake"
	RuleSTLSInjection  Rule = "stls_injection"

	RuleMaxSessions      Rule = "limit.max_sessions"
	RuleIPSessions       Rule = "limit.ip_sessions"
	RuleIPConnectionRate Rule = "limit.ip_connection_rate"
	RuleFailedLoginsIP   Rule = "limit.failed_logins_ip"
	RuleFailedLoginsUser Rule = "limit.failed_logins_user"
	RuleUserSessions     Rule = "limit.user_sessions"
	RuleLoginDelay       Rule = "limit.login_delay"
	RuleCommandRate      Rule = "limit.command_rate"
	RuleCommandThrottled Rule = "limit.command_rate.throttled"
	RuleMaxRetrievals    Rule = "limit.max_retrievals"
	// The fleet's shared store did not answer and limits.shared says closed.
	RuleSharedUnavailable Rule = "limit.shared_unavailable"
)

// Rules are the rules a policy record may carry.
var Rules = []Rule{
	RuleSyntax, RuleWrongState, RuleUnknownCommand, RuleUnsupported, RuleLineTooLong, RuleRoute,
	RuleTLSRequired, RuleTLSHandshake, RuleSTLSInjection,
	RuleMaxSessions, RuleIPSessions, RuleIPConnectionRate, RuleFailedLoginsIP, RuleFailedLoginsUser,
	RuleUserSessions, RuleLoginDelay, RuleCommandRate, RuleCommandThrottled, RuleMaxRetrievals,
	RuleSharedUnavailable,
}
