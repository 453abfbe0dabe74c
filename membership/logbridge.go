package membership

import (
	"bytes"
	"context"
	"log"
	"log/slog"
)

// memberlistLogWriter turns the lines memberlist prints through its
// *log.Logger into slog records, so the library never writes to stderr and
// the application's handler decides what to keep. memberlist tags its lines
// "[DEBUG]", "[INFO]", "[WARN]" or "[ERR]"; warnings and errors keep their
// weight (Warn), the chatter goes to Debug.
type memberlistLogWriter struct {
	logger *slog.Logger
}

// newMemberlistLogger returns a *log.Logger for memberlist.Config.Logger
// that forwards every line to logger.
func newMemberlistLogger(logger *slog.Logger) *log.Logger {
	return log.New(memberlistLogWriter{logger: logger}, "", 0)
}

// Write handles one line: log.Logger calls Write once per message.
func (w memberlistLogWriter) Write(p []byte) (int, error) {
	line := bytes.TrimSpace(p)
	level := slog.LevelDebug
	for _, tag := range []struct {
		prefix string
		level  slog.Level
	}{
		{"[ERR]", slog.LevelWarn},
		{"[ERROR]", slog.LevelWarn},
		{"[WARN]", slog.LevelWarn},
		{"[INFO]", slog.LevelDebug},
		{"[DEBUG]", slog.LevelDebug},
	} {
		if rest, ok := bytes.CutPrefix(line, []byte(tag.prefix)); ok {
			level, line = tag.level, bytes.TrimSpace(rest)
			break
		}
	}
	line = bytes.TrimPrefix(line, []byte("memberlist: "))
	if bytes.Contains(line, []byte(errSnapshot.Error())) {
		level = slog.LevelDebug // our own state snapshot, declined on purpose
	}
	if w.logger.Enabled(context.Background(), level) {
		w.logger.Log(context.Background(), level, string(line), "component", "memberlist")
	}
	return len(p), nil
}
