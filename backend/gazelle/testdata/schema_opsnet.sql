-- The tables of an OPSnet Gazelle database (Ocelot 2.x layout) that the tracker reads and
-- writes, with Gazelle's column types, cut down to the columns the tracker touches plus the
-- few Gazelle itself needs to make a row. User transfer totals live in users_leech_stats and
-- torrent swarm counters in torrents_leech_stats. See protocol.md §3.4.

CREATE TABLE users_main (
  ID int(10) unsigned NOT NULL AUTO_INCREMENT,
  Username varchar(20) NOT NULL,
  Enabled enum('0','1','2','unconfirmed') NOT NULL DEFAULT 'unconfirmed',
  Visible enum('1','0') NOT NULL DEFAULT '1',
  IP varchar(15) NOT NULL DEFAULT '0.0.0.0',
  can_leech tinyint(4) NOT NULL DEFAULT '1',
  torrent_pass char(32) NOT NULL,
  PRIMARY KEY (ID),
  UNIQUE KEY Username (Username),
  KEY torrent_pass (torrent_pass),
  KEY Enabled (Enabled)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE users_leech_stats (
  UserID int(10) unsigned NOT NULL,
  Uploaded bigint(20) unsigned NOT NULL DEFAULT '0',
  Downloaded bigint(20) unsigned NOT NULL DEFAULT '0',
  PRIMARY KEY (UserID),
  KEY uls_uploaded_idx (Uploaded),
  KEY uls_downloaded_idx (Downloaded)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE torrents (
  ID int(10) NOT NULL AUTO_INCREMENT,
  GroupID int(10) NOT NULL,
  UserID int(10) unsigned DEFAULT NULL,
  info_hash binary(20) NOT NULL,
  freetorrent enum('0','1','2') NOT NULL DEFAULT '0',
  Size bigint(12) NOT NULL DEFAULT '0',
  Time datetime NOT NULL DEFAULT current_timestamp(),
  PRIMARY KEY (ID),
  UNIQUE KEY InfoHash (info_hash),
  KEY GroupID (GroupID),
  KEY freetorrent (freetorrent)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE torrents_leech_stats (
  TorrentID int(10) NOT NULL,
  Seeders int(6) unsigned NOT NULL DEFAULT '0',
  Leechers int(6) unsigned NOT NULL DEFAULT '0',
  Snatched int(10) unsigned NOT NULL DEFAULT '0',
  Balance bigint(20) NOT NULL DEFAULT '0',
  last_action datetime DEFAULT NULL,
  PRIMARY KEY (TorrentID),
  KEY tls_seeders_idx (Seeders),
  KEY tls_leechers_idx (Leechers),
  KEY tls_snatched_idx (Snatched),
  KEY tls_last_action_idx (last_action)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE xbt_files_users (
  uid int(11) NOT NULL,
  fid int(11) NOT NULL,
  active tinyint(1) NOT NULL DEFAULT '1',
  uploaded bigint(20) NOT NULL DEFAULT '0',
  downloaded bigint(20) NOT NULL DEFAULT '0',
  upspeed int(10) unsigned NOT NULL DEFAULT '0',
  downspeed int(10) unsigned NOT NULL DEFAULT '0',
  remaining bigint(20) NOT NULL DEFAULT '0',
  corrupt bigint(20) NOT NULL DEFAULT '0',
  timespent int(10) unsigned NOT NULL DEFAULT '0',
  announced int(11) NOT NULL DEFAULT '0',
  ip varchar(15) NOT NULL DEFAULT '',
  peer_id binary(20) NOT NULL DEFAULT '',
  useragent varchar(51) NOT NULL DEFAULT '',
  mtime int(11) NOT NULL DEFAULT '0',
  completed tinyint(1) NOT NULL DEFAULT '0',
  connectable tinyint(4) NOT NULL DEFAULT '1',
  PRIMARY KEY (uid, peer_id, fid),
  KEY remaining_idx (remaining),
  KEY fid_idx (fid),
  KEY mtime_idx (mtime),
  KEY uid_active (uid, active)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE xbt_snatched (
  uid int(11) NOT NULL DEFAULT '0',
  tstamp int(11) NOT NULL,
  fid int(11) NOT NULL,
  IP varchar(15) NOT NULL,
  seedtime int(10) unsigned NOT NULL DEFAULT '0',
  KEY fid (fid),
  KEY tstamp (tstamp),
  KEY uid_tstamp (uid, tstamp)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE xbt_client_whitelist (
  id int(10) unsigned NOT NULL AUTO_INCREMENT,
  peer_id varchar(20) DEFAULT NULL,
  vstring varchar(200) DEFAULT '',
  PRIMARY KEY (id),
  UNIQUE KEY peer_id (peer_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE users_freeleeches (
  UserID int(10) NOT NULL,
  TorrentID int(10) NOT NULL,
  Time datetime NOT NULL DEFAULT current_timestamp(),
  Expired tinyint(1) NOT NULL DEFAULT '0',
  Downloaded bigint(20) NOT NULL DEFAULT '0',
  Uses int(10) NOT NULL DEFAULT '1',
  PRIMARY KEY (UserID, TorrentID),
  KEY Time (Time),
  KEY Expired_Time (Expired, Time)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
