'use strict';
// Trust on first use, as SSH and the Rust client: a known-hosts file holds lines
// `host:port SHA256:<base64>`. An unknown host is refused unless accepted (then recorded); a
// changed fingerprint is a hard failure with no bypass. Same file format as the Rust and Python
// clients, so all of them share ~/.velocity/known_hosts.

const fs = require('fs');
const os = require('os');
const path = require('path');
const { TrustError } = require('./errors');

const defaultKnownHosts = () => path.join(process.env.HOME || os.homedir() || '.', '.velocity', 'known_hosts');
const hostLabel = (host, port) => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);

function lookup(file, label) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if (e.code === 'ENOENT') return null;
    throw new TrustError(`cannot read ${file}: ${e.message}`);
  }
  for (const line of text.split('\n')) {
    if (line.trimStart().startsWith('#')) continue;
    const sp = line.indexOf(' ');
    if (sp < 0) continue;
    if (line.slice(0, sp) === label) return line.slice(sp + 1).trim();
  }
  return null;
}

function record(file, label, fingerprint) {
  const dir = path.dirname(file);
  fs.mkdirSync(dir, { recursive: true, mode: path.basename(dir) === '.velocity' ? 0o700 : 0o777 });
  fs.appendFileSync(file, `${label} ${fingerprint}\n`);
}

function changed(label, known, now, file) {
  return [
    '',
    '@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@',
    '@    WARNING: VELOCITY SERVER IDENTIFICATION HAS CHANGED!  @',
    '@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@',
    'IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!',
    'Someone could be eavesdropping on you right now (man-in-the-middle attack)!',
    "It is also possible that the server's identity key was replaced.",
    `The fingerprint for ${label} recorded in ${file} is`,
    `    ${known}`,
    'and the server now presents',
    `    ${now}`,
    "Check the new fingerprint with the server's operator (`velocityd fingerprint`), then",
    `remove the old line from ${file}. The connection was refused.`,
  ].join('\n');
}

/**
 * Throw TrustError unless the server presenting `fingerprint` is trusted. `acceptNewHost` may be
 * an (async) function (label, fingerprint) => boolean that asks a person; `pinned` accepts exactly
 * that fingerprint, whatever the known-hosts file says.
 */
async function check(label, fingerprint, { knownHosts, acceptNewHost = false, pinned } = {}) {
  if (pinned != null) {
    if (pinned !== fingerprint) {
      throw new TrustError(`server ${label} presents ${fingerprint}, not the pinned fingerprint ${pinned}: refused`);
    }
    return;
  }
  const file = knownHosts || defaultKnownHosts();
  const known = lookup(file, label);
  if (known === fingerprint) return;
  if (known !== null) throw new TrustError(changed(label, known, fingerprint, file));
  const accept = typeof acceptNewHost === 'function' ? await acceptNewHost(label, fingerprint) : Boolean(acceptNewHost);
  if (!accept) {
    throw new TrustError(
      `unknown server ${label} with fingerprint ${fingerprint}: check it with the server's operator ` +
        `(\`velocityd fingerprint\`), then connect with acceptNewHost: true or fingerprint: '${fingerprint}'`,
    );
  }
  record(file, label, fingerprint);
}

module.exports = { defaultKnownHosts, hostLabel, lookup, record, check };
