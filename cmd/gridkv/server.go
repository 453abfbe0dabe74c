package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// redisCompatVersion is the Redis version HELLO and INFO report: the protocol level this
// server follows (RESP3, the 7.0 options of SET and EXPIRE), not a Redis build.
const redisCompatVersion = "7.0.0"

func init() {
	register(
		&command{name: "ping", arity: -1, flags: []string{"fast"}, group: "connection",
			summary: "Answers PONG, or the message given.", run: cmdPing},
		&command{name: "echo", arity: 2, flags: []string{"fast"}, group: "connection",
			summary: "Returns the message given.", run: cmdEcho},
		&command{name: "hello", arity: -1, flags: []string{"fast", "no-auth"}, group: "connection",
			summary: "Chooses RESP2 or RESP3 and describes the server.", run: cmdHello},
		&command{name: "select", arity: 2, flags: []string{"fast"}, group: "connection",
			summary: "Selects database 0, the only one.", run: cmdSelect},
		&command{name: "quit", arity: -1, flags: []string{"fast", "no-auth"}, group: "connection",
			summary: "Closes the connection.", run: cmdQuit},
		&command{name: "client", arity: -2, flags: []string{"fast"}, group: "connection",
			summary: "CLIENT ID, GETNAME, SETNAME, SETINFO.", run: cmdClient},
		&command{name: "info", arity: -1, flags: []string{}, group: "server",
			summary: "Describes the node: server, clients, stats, keyspace sections.", run: cmdInfo},
		&command{name: "config", arity: -2, flags: []string{}, group: "server",
			summary: "CONFIG GET answers an empty list: the node is configured by flags.", run: cmdConfig},
		&command{name: "command", arity: -1, flags: []string{}, group: "server",
			summary: "Describes the commands served: COMMAND, COUNT, INFO, DOCS, LIST.", run: cmdCommand},
	)
}

func cmdPing(s *respServer, c *client, args [][]byte) {
	switch len(args) {
	case 1:
		c.conn.WriteString("PONG")
	case 2:
		c.conn.WriteBulk(args[1])
	default:
		c.conn.WriteError(wrongArity("ping"))
	}
}

func cmdEcho(s *respServer, c *client, args [][]byte) { c.conn.WriteBulk(args[1]) }

// cmdHello: HELLO [protover [AUTH user pass] [SETNAME name]]. The node has no users: AUTH is
// accepted whatever it says, as Redis's default user without a password accepts it.
func cmdHello(s *respServer, c *client, args [][]byte) {
	proto := c.proto
	if len(args) >= 2 {
		v, ok := parseInt(args[1])
		if !ok {
			c.conn.WriteError("ERR Protocol version is not an integer or out of range")
			return
		}
		if v < 2 || v > 3 {
			c.conn.WriteError("NOPROTO unsupported protocol version")
			return
		}
		proto = int(v)
	}
	name := c.name
	for i := 2; i < len(args); i++ {
		more := len(args) - 1 - i
		switch {
		case equalFold(args[i], "auth") && more >= 2:
			i += 2
		case equalFold(args[i], "setname") && more >= 1:
			name = string(args[i+1])
			i++
		default:
			c.conn.WriteError(fmt.Sprintf("ERR Syntax error in HELLO option '%s'", oneLine(args[i])))
			return
		}
	}
	c.proto, c.name = proto, name
	c.mapHeader(7)
	c.conn.WriteBulkString("server")
	c.conn.WriteBulkString("redis")
	c.conn.WriteBulkString("version")
	c.conn.WriteBulkString(redisCompatVersion)
	c.conn.WriteBulkString("proto")
	c.conn.WriteInt(proto)
	c.conn.WriteBulkString("id")
	c.conn.WriteInt64(c.id)
	c.conn.WriteBulkString("mode")
	c.conn.WriteBulkString("standalone")
	c.conn.WriteBulkString("role")
	c.conn.WriteBulkString("master")
	c.conn.WriteBulkString("modules")
	c.conn.WriteArray(0)
}

func oneLine(b []byte) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(string(b))
}

// cmdSelect: GridKV has one keyspace, database 0; others fail as in a Redis with
// "databases 1".
func cmdSelect(s *respServer, c *client, args [][]byte) {
	n, ok := parseInt(args[1])
	switch {
	case !ok || n < -2147483648 || n > 2147483647:
		c.conn.WriteError(errNotInteger)
	case n != 0:
		c.conn.WriteError("ERR DB index is out of range")
	default:
		c.ok()
	}
}

func cmdQuit(s *respServer, c *client, args [][]byte) {
	c.ok()
	c.conn.Close() // redcon flushes the reply first
}

func cmdClient(s *respServer, c *client, args [][]byte) {
	sub := strings.ToLower(string(args[1]))
	switch {
	case sub == "id" && len(args) == 2:
		c.conn.WriteInt64(c.id)
	case sub == "getname" && len(args) == 2:
		if c.name == "" {
			c.null()
		} else {
			c.conn.WriteBulkString(c.name)
		}
	case sub == "setname" && len(args) == 3:
		if strings.ContainsAny(string(args[2]), " \n") {
			c.conn.WriteError("ERR Client names cannot contain spaces, newlines or special characters.")
			return
		}
		c.name = string(args[2])
		c.ok()
	case sub == "setinfo" && len(args) == 4:
		c.ok()
	case sub == "id" || sub == "getname" || sub == "setname" || sub == "setinfo":
		c.conn.WriteError(fmt.Sprintf("ERR wrong number of arguments for 'client|%s' command", sub))
	default:
		c.conn.WriteError(fmt.Sprintf("ERR unknown subcommand '%s'. Try CLIENT HELP.", oneLine(args[1])))
	}
}

// cmdConfig: the node is configured by its flags. CONFIG GET knows the few parameters
// clients and tools ask about (redis-benchmark reads "save" and "appendonly"); others match
// nothing. CONFIG SET and the rest fail.
func cmdConfig(s *respServer, c *client, args [][]byte) {
	sub := strings.ToLower(string(args[1]))
	switch {
	case sub == "get" && len(args) >= 3:
		params := [][2]string{
			{"save", ""},         // no RDB snapshots: data lives in the cluster's replicas
			{"appendonly", "no"}, // no AOF either
			{"databases", "1"},
			{"maxclients", strconv.Itoa(s.cfg.maxClients)},
		}
		var found [][2]string
		for _, p := range params {
			for _, pattern := range args[2:] {
				if globMatch(bytes.ToLower(pattern), []byte(p[0])) {
					found = append(found, p)
					break
				}
			}
		}
		c.mapHeader(len(found))
		for _, p := range found {
			c.conn.WriteBulkString(p[0])
			c.conn.WriteBulkString(p[1])
		}
	case sub == "get":
		c.conn.WriteError("ERR wrong number of arguments for 'config|get' command")
	case sub == "set" || sub == "resetstat" || sub == "rewrite":
		c.conn.WriteError("ERR CONFIG " + strings.ToUpper(sub) + " is not supported: GridKV nodes are configured by flags")
	default:
		c.conn.WriteError(fmt.Sprintf("ERR unknown subcommand '%s'. Try CONFIG HELP.", oneLine(args[1])))
	}
}

// cmdInfo writes the server, clients, stats and keyspace sections, or those named. The
// keyspace section counts every key, O(keys).
func cmdInfo(s *respServer, c *client, args [][]byte) {
	want := map[string]bool{}
	for _, a := range args[1:] {
		want[strings.ToLower(string(a))] = true
	}
	all := len(want) == 0 || want["all"] || want["default"] || want["everything"]
	var b strings.Builder
	section := func(name string, lines ...string) {
		if !all && !want[strings.ToLower(name)] {
			return
		}
		if b.Len() > 0 {
			b.WriteString("\r\n")
		}
		b.WriteString("# " + name + "\r\n")
		for _, l := range lines {
			b.WriteString(l + "\r\n")
		}
	}
	uptime := time.Since(s.cfg.start)
	_, port, _ := net.SplitHostPort(s.addr())
	section("Server",
		"redis_version:"+redisCompatVersion,
		"redis_mode:standalone",
		"gridkv_node_id:"+s.cfg.nodeID,
		"os:"+runtime.GOOS+" "+runtime.GOARCH,
		"arch_bits:64",
		"go_version:"+runtime.Version(),
		fmt.Sprintf("process_id:%d", os.Getpid()),
		"tcp_port:"+port,
		fmt.Sprintf("uptime_in_seconds:%d", int64(uptime.Seconds())),
		fmt.Sprintf("uptime_in_days:%d", int64(uptime.Hours()/24)),
	)
	section("Clients", fmt.Sprintf("connected_clients:%d", s.clients.Load()),
		fmt.Sprintf("maxclients:%d", s.cfg.maxClients))
	section("Stats", fmt.Sprintf("total_commands_processed:%d", s.stats.commands.Load()))
	if all || want["keyspace"] {
		ctx, cancel := s.opContext()
		keys, expiring, err := s.countKeys(ctx)
		cancel()
		if err != nil {
			c.writeError(err)
			return
		}
		lines := []string{}
		if keys > 0 {
			lines = append(lines, fmt.Sprintf("db0:keys=%d,expires=%d,avg_ttl=0", keys, expiring))
		}
		section("Keyspace", lines...)
	}
	c.text(b.String())
}

// cmdCommand: COMMAND, COMMAND COUNT, COMMAND LIST, COMMAND INFO [name...], COMMAND DOCS
// [name...], in Redis 7's shapes, enough for redis-cli's hints and client libraries.
func cmdCommand(s *respServer, c *client, args [][]byte) {
	if len(args) == 1 {
		c.conn.WriteArray(len(commandList))
		for _, cmd := range commandList {
			writeCommandInfo(c, cmd)
		}
		return
	}
	sub := strings.ToLower(string(args[1]))
	names := args[2:]
	switch sub {
	case "count":
		c.conn.WriteInt(len(commandList))
	case "list":
		c.conn.WriteArray(len(commandList))
		for _, cmd := range commandList {
			c.conn.WriteBulkString(cmd.name)
		}
	case "info":
		if len(names) == 0 {
			c.conn.WriteArray(len(commandList))
			for _, cmd := range commandList {
				writeCommandInfo(c, cmd)
			}
			return
		}
		c.conn.WriteArray(len(names))
		for _, n := range names {
			if cmd := commands[strings.ToLower(string(n))]; cmd != nil {
				writeCommandInfo(c, cmd)
			} else {
				c.null()
			}
		}
	case "docs":
		var found []*command
		if len(names) == 0 {
			found = commandList
		}
		for _, n := range names {
			if cmd := commands[strings.ToLower(string(n))]; cmd != nil {
				found = append(found, cmd)
			}
		}
		c.mapHeader(len(found))
		for _, cmd := range found {
			c.conn.WriteBulkString(cmd.name)
			c.mapHeader(3)
			c.conn.WriteBulkString("summary")
			c.conn.WriteBulkString(cmd.summary)
			c.conn.WriteBulkString("since")
			c.conn.WriteBulkString("1.0.0")
			c.conn.WriteBulkString("group")
			c.conn.WriteBulkString(cmd.group)
		}
	default:
		c.conn.WriteError(fmt.Sprintf("ERR unknown subcommand '%s'. Try COMMAND HELP.", oneLine(args[1])))
	}
}

// writeCommandInfo writes Redis 7's ten-element description of a command.
func writeCommandInfo(c *client, cmd *command) {
	c.conn.WriteArray(10)
	c.conn.WriteBulkString(cmd.name)
	c.conn.WriteInt(cmd.arity)
	c.setHeader(len(cmd.flags))
	for _, f := range cmd.flags {
		c.conn.WriteString(f)
	}
	c.conn.WriteInt(cmd.firstKey)
	c.conn.WriteInt(cmd.lastKey)
	c.conn.WriteInt(cmd.step)
	c.setHeader(0) // ACL categories
	c.setHeader(0) // tips
	c.conn.WriteArray(0)
	c.conn.WriteArray(0)
}
