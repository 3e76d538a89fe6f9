package velocity

import (
	"errors"
	"fmt"
)

// Code is a wire error code (profile section 6). Each known code is also an error value, so
// that errors.Is(err, velocity.ErrKeyNotFound) tells what the server said.
type Code uint16

// The wire codes. CodeOutcomeUnknown is an extension for cluster nodes: the write reached the
// cluster but its outcome is unknown (a leader failed or timed out midway); it may or may not
// have been applied, and reading the key tells.
const (
	CodeSuccess            Code = 0x0000
	CodeInvalidCredentials Code = 0x0001
	CodeRateLimited        Code = 0x0002
	CodeInvalidCommand     Code = 0x0003
	CodeKeyNotFound        Code = 0x0004
	CodeStorageError       Code = 0x0005
	CodeProtocolError      Code = 0x0006
	CodeServerOverloaded   Code = 0x0007
	CodeUnauthorized       Code = 0x0008
	CodeOutcomeUnknown     Code = 0x0009
)

// Targets for errors.Is, one per wire code. An *Error from the server matches the one of its
// code; so does a *FrameError (ErrProtocolError).
var (
	ErrInvalidCredentials error = CodeInvalidCredentials
	ErrRateLimited        error = CodeRateLimited
	ErrInvalidCommand     error = CodeInvalidCommand
	ErrKeyNotFound        error = CodeKeyNotFound
	ErrStorageError       error = CodeStorageError
	ErrProtocolError      error = CodeProtocolError
	ErrServerOverloaded   error = CodeServerOverloaded
	ErrUnauthorized       error = CodeUnauthorized
	ErrOutcomeUnknown     error = CodeOutcomeUnknown
)

// Failures that the client finds itself; they carry no wire code.
var (
	// ErrTrust: the server's identity could not be trusted (unknown host not accepted, changed
	// or mismatched key, pinned fingerprint not presented).
	ErrTrust = errors.New("velocity: server identity not trusted")
	// ErrUsage: the caller's input cannot be sent (too long, an unsupported parameter type, a
	// placeholder count that does not match).
	ErrUsage = errors.New("velocity: usage")
	// ErrDisconnected: the server said DISCONNECT or closed the connection, or the connection
	// was closed by this side. A *DisconnectedError matches it.
	ErrDisconnected = errors.New("velocity: disconnected")
)

var codeNames = map[Code]string{
	CodeSuccess:            "SUCCESS",
	CodeInvalidCredentials: "INVALID_CREDENTIALS",
	CodeRateLimited:        "RATE_LIMITED",
	CodeInvalidCommand:     "INVALID_COMMAND",
	CodeKeyNotFound:        "KEY_NOT_FOUND",
	CodeStorageError:       "STORAGE_ERROR",
	CodeProtocolError:      "PROTOCOL_ERROR",
	CodeServerOverloaded:   "SERVER_OVERLOADED",
	CodeUnauthorized:       "UNAUTHORIZED",
	CodeOutcomeUnknown:     "OUTCOME_UNKNOWN",
}

// String is the profile's name of the code, e.g. KEY_NOT_FOUND, or 0x0099 for an unknown one.
func (c Code) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("0x%04x", uint16(c))
}

// Known reports whether this client knows the code (a newer server may send others).
func (c Code) Known() bool {
	_, ok := codeNames[c]
	return ok
}

// Error makes a Code usable as an errors.Is target.
func (c Code) Error() string { return "velocity: " + c.String() }

// Error is an ERROR frame (or a failed AUTH_RESPONSE) from the server, or a protocol violation
// by the server that the client found (Code 0x0006, as the other clients do).
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string {
	if !e.Code.Known() {
		return fmt.Sprintf("velocity: server error %s: %s", e.Code.String(), e.Message)
	}
	// Code.String, not %s of the Code: as an error it would print with its own prefix.
	return fmt.Sprintf("velocity: %s: %s", e.Code.String(), e.Message)
}

// Is matches the Code of the error (ErrKeyNotFound, ...).
func (e *Error) Is(target error) bool {
	c, ok := target.(Code)
	return ok && c == e.Code
}

func errorFor(code uint16, message string) *Error {
	return &Error{Code: Code(code), Message: message}
}

func protocolErrorf(format string, a ...any) *Error {
	return &Error{Code: CodeProtocolError, Message: fmt.Sprintf(format, a...)}
}

// FrameError is a framing violation found while decoding what the server sent. Kind names it
// as the shared test vectors do (bad_magic, bad_version, too_long, bad_checksum, unknown_type,
// malformed); Fatal says that the frame boundary is lost, so the connection must close.
type FrameError struct {
	Kind    string
	Message string
	Fatal   bool
}

func (e *FrameError) Error() string { return "velocity: PROTOCOL_ERROR: " + e.Message }

// Is matches ErrProtocolError.
func (e *FrameError) Is(target error) bool { return target == ErrProtocolError }

// Code is always CodeProtocolError.
func (e *FrameError) Code() Code { return CodeProtocolError }

// DisconnectedError: the server sent DISCONNECT (shutdown, idle timeout, too many failed
// logins, a revoked user), closed the socket, or this side closed the connection.
type DisconnectedError struct {
	Message string
	// FromServer is true when the server sent DISCONNECT; DisconnectCode and Reason are its own.
	FromServer     bool
	DisconnectCode uint16
	Reason         string
}

func (e *DisconnectedError) Error() string { return "velocity: " + e.Message }

// Is matches ErrDisconnected.
func (e *DisconnectedError) Is(target error) bool { return target == ErrDisconnected }

func disconnected(format string, a ...any) *DisconnectedError {
	return &DisconnectedError{Message: fmt.Sprintf(format, a...)}
}

func trustError(msg string) error { return fmt.Errorf("%w: %s", ErrTrust, msg) }

func usageErrorf(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, a...))
}

// CodeOf gives the wire code carried by err (an *Error or *FrameError anywhere in its chain).
func CodeOf(err error) (Code, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e.Code, true
	}
	var f *FrameError
	if errors.As(err, &f) {
		return CodeProtocolError, true
	}
	return 0, false
}
