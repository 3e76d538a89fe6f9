'use strict';
// Starts the real velocityd built from this repository on a free loopback port, with a fresh
// data directory and two users (alice: readwrite, reader: readonly).

const { spawn, spawnSync, execFileSync } = require('child_process');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');
const velocity = require('..');

const REPO = path.resolve(__dirname, '..', '..', '..');
const PASSWORD = 'correct horse battery staple';
const RO_PASSWORD = 'read only please';

function bin(name) {
  if (name === 'velocityd' && process.env.VELOCITYD) return process.env.VELOCITYD;
  const p = path.join(REPO, 'target', 'release', name);
  if (!fs.existsSync(p)) execFileSync('cargo', ['build', '--release', '--locked', '--bins'], { cwd: REPO, stdio: 'inherit' });
  return p;
}

function velocityd(args, dataDir, input = '') {
  const out = spawnSync(bin('velocityd'), [...args, '--data-dir', dataDir], { input, encoding: 'utf8' });
  if (out.status !== 0) throw new Error(`velocityd ${args.join(' ')}: ${out.stderr}`);
  return out.stdout;
}

const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), 'velocity-node-'));

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const canConnect = (port) => new Promise((resolve) => {
  const s = net.connect({ host: '127.0.0.1', port }, () => { s.destroy(); resolve(true); });
  s.on('error', () => resolve(false));
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Server {
  static async start({ cores = 1, extra = [], port = 0, dataDir = null, fsizeBytes = 0 } = {}) {
    const s = new Server();
    s.dir = tmpDir();
    s.dataDir = dataDir || path.join(s.dir, 'data');
    if (!dataDir) {
      fs.mkdirSync(s.dataDir);
      velocityd(['user', 'add', 'alice', '--role', 'readwrite', '--password-stdin'], s.dataDir, PASSWORD);
      velocityd(['user', 'add', 'reader', '--role', 'readonly', '--password-stdin'], s.dataDir, RO_PASSWORD);
    }
    s.knownHosts = path.join(s.dir, 'known_hosts');
    s.tls = !extra.includes('--plaintext');
    const deadline = Date.now() + 20000;
    for (;;) {
      s.port = port || (await freePort());
      s.log = path.join(s.dir, 'log');
      const logFd = fs.openSync(s.log, 'w');
      const args = ['--listen', `127.0.0.1:${s.port}`, '--cores', String(cores), '--data-dir', s.dataDir, ...extra];
      // A file-size limit (in the shell's 512-byte blocks) stands in for a full disk.
      s.proc = fsizeBytes
        ? spawn('sh', ['-c', `ulimit -f ${Math.floor(fsizeBytes / 512)}; exec "$0" "$@"`, bin('velocityd'), ...args], { stdio: ['ignore', 'ignore', logFd] })
        : spawn(bin('velocityd'), args, { stdio: ['ignore', 'ignore', logFd] });
      let exited = false;
      s.proc.once('exit', () => { exited = true; });
      while (Date.now() < deadline && !exited) {
        if (await canConnect(s.port)) return s;
        await sleep(20);
      }
      if (Date.now() >= deadline) throw new Error(`velocityd did not start:\n${fs.readFileSync(s.log, 'utf8')}`);
    }
  }

  connect(opts = {}) {
    return velocity.connect({ port: this.port, tls: this.tls, knownHosts: this.knownHosts, acceptNewHost: true, ...opts });
  }

  alice(opts = {}) {
    return this.connect({ user: 'alice', password: PASSWORD, ...opts });
  }

  async stop() {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      const gone = new Promise((r) => this.proc.once('exit', r));
      this.proc.kill('SIGTERM');
      await gone;
    }
  }

  async destroy() {
    await this.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Run `fn` with a fresh server, stopped afterwards whatever `fn` does. */
async function withServer(opts, fn) {
  const s = await Server.start(opts);
  try {
    await fn(s);
  } finally {
    await s.destroy();
  }
}

module.exports = { Server, velocityd, bin, tmpDir, PASSWORD, RO_PASSWORD, REPO, withServer };
