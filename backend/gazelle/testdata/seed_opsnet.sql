-- Seed for schema_opsnet.sql. gazelle_test.go expects exactly what this loads to; change both
-- together.

-- Users: 1 ordinary, 2 may not leech, 3 hidden (Visible='0': protected), 4 disabled,
-- 5 protected by IP 127.0.0.1, 6 unconfirmed (not enabled), 7 enabled without a passkey.
INSERT INTO users_main (ID, Username, Enabled, Visible, IP, can_leech, torrent_pass) VALUES
  (1, 'alice', '1', '1', '203.0.113.7', 1, 'alicealicealicealicealicealice01'),
  (2, 'bob', '1', '1', '203.0.113.8', 0, 'bobbobbobbobbobbobbobbobbobbob02'),
  (3, 'carol', '1', '0', '203.0.113.9', 1, 'carolcarolcarolcarolcarolcarol03'),
  (4, 'dave', '2', '1', '203.0.113.10', 1, 'davedavedavedavedavedavedavede04'),
  (5, 'erin', '1', '1', '127.0.0.1', 1, 'erinerinerinerinerinerinerin0005'),
  (6, 'frank', 'unconfirmed', '1', '203.0.113.11', 1, 'frankfrankfrankfrankfrankfrank06'),
  (7, 'grace', '1', '1', '203.0.113.12', 1, '');

INSERT INTO users_leech_stats (UserID, Uploaded, Downloaded) VALUES
  (1, 1000, 500), (2, 0, 0), (3, 42, 0), (4, 7, 7), (5, 0, 0), (6, 0, 0), (7, 0, 0);

-- Torrents: 1 normal, 2 freeleech, 3 neutral (its info_hash ends in a space and a NUL, which a
-- binary(20) column keeps), 4 normal without a torrents_leech_stats row, 5 with a malformed
-- enum value (read as normal).
INSERT INTO torrents (ID, GroupID, UserID, info_hash, freetorrent, Size) VALUES
  (1, 10, 1, UNHEX('0102030405060708090a0b0c0d0e0f1011121314'), '0', 1048576),
  (2, 10, 1, UNHEX('aabbccddeeff00112233445566778899aabbccdd'), '1', 2097152),
  (3, 11, 3, UNHEX('ffeeddccbbaa99887766554433221100ffee2000'), '2', 4194304),
  (4, 12, 2, UNHEX('2525252525252525252525252525252525252525'), '0', 8388608);
INSERT IGNORE INTO torrents (ID, GroupID, UserID, info_hash, freetorrent, Size) VALUES
  (5, 13, 2, UNHEX('5555555555555555555555555555555555555555'), '7', 1);

-- Seeders and Leechers left over from a previous run: peers live in memory, so a load ignores
-- them.
INSERT INTO torrents_leech_stats (TorrentID, Seeders, Leechers, Snatched, Balance, last_action) VALUES
  (1, 5, 2, 3, 0, NOW()),
  (2, 0, 1, 0, -100, NULL),
  (3, 9, 0, 12, 300, NOW()),
  (5, 0, 0, 1, 0, NULL);

-- Tokens: 1 on 2, 3 on 4 and 5 on 3 are live; 2 on 1 has expired; 1 on 99 names a torrent
-- that no longer exists.
INSERT INTO users_freeleeches (UserID, TorrentID, Time, Expired, Downloaded, Uses) VALUES
  (1, 2, '2024-01-02 03:04:05', 0, 0, 1),
  (2, 1, '2023-01-01 00:00:00', 1, 123456, 1),
  (3, 4, '2024-02-03 04:05:06', 0, 99, 1),
  (1, 99, '2024-03-04 05:06:07', 0, 0, 1),
  (5, 3, '2024-04-05 06:07:08', 0, 0, 2);

-- Whitelist, with Gazelle's seed granularity; a NULL prefix is skipped.
INSERT INTO xbt_client_whitelist (id, peer_id, vstring) VALUES
  (1, '-qB42', 'qBittorrent 4.2.x'),
  (2, '-TR30', 'Transmission 3.0x'),
  (3, '-DE2', 'Deluge 2.x'),
  (4, 'M', 'Mainline'),
  (5, NULL, 'half-made row');
