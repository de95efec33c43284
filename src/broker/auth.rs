//! Who may connect to the embedded broker and what each user may do: the
//! engine's own login, the users of a Mosquitto password file and the
//! topic rules of its `acl_file`, read again on SIGHUP.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use super::BrokerError;
use crate::config::Config;
use crate::mqtt::Password;
use crate::mqtt::acl::Acl;
use crate::mqtt::broker_files;

/// Who may connect to the embedded broker: the engine's own login
/// (MQTT_USERNAME) and the users of a Mosquitto password file
/// (BROKER_PASSWORD_FILE). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct BrokerAuth {
    plain: Arc<HashMap<String, Password>>,
    /// What the files give; shared by every clone, replaced by `reload`.
    files: Arc<RwLock<Files>>,
}

/// The users of BROKER_PASSWORD_FILE and the rules of BROKER_ACL_FILE, and
/// where they were read from.
#[derive(Debug, Default)]
struct Files {
    hashed: HashMap<String, String>,
    /// Topic rules of the password file's users.
    acl: Option<Arc<Acl>>,
    password_path: Option<PathBuf>,
    acl_path: Option<PathBuf>,
}

impl BrokerAuth {
    /// From MQTT_USERNAME/MQTT_PASSWORD and BROKER_PASSWORD_FILE; None (anyone
    /// may connect) when neither is set.
    pub fn from_config(config: &Config) -> Result<Option<Self>, BrokerError> {
        let credentials = config.mqtt_credentials()?;
        let file = config.broker_password_file.as_deref();
        if config.broker_acl_file.is_some() && file.is_none() {
            return Err(BrokerError::AclWithoutPasswords);
        }
        if credentials.is_none() && file.is_none() {
            return Ok(None);
        }
        let mut auth = Self::default();
        if let Some(path) = file {
            auth = auth.with_password_file(path)?;
        }
        if let Some(path) = config.broker_acl_file.as_deref() {
            auth = auth.with_acl_file(path)?;
        }
        match credentials {
            Some(c) => auth = auth.with_user(c.username, c.password),
            None => return Err(BrokerError::EngineLogin),
        }
        Ok(Some(auth))
    }

    /// Adds a user with a password in clear.
    pub fn with_user(mut self, username: impl Into<String>, password: Password) -> Self {
        Arc::make_mut(&mut self.plain).insert(username.into(), password);
        self
    }

    /// Takes the users of a Mosquitto password file (`$7$` or `$6$`
    /// hashes).
    pub fn with_password_file(self, path: &std::path::Path) -> Result<Self, BrokerError> {
        let users = read_passwords(path)?;
        let mut files = self.files_mut();
        files.hashed = users;
        files.password_path = Some(path.to_owned());
        drop(files);
        Ok(self)
    }

    /// Takes the topic rules of a Mosquitto `acl_file`: every user of the
    /// password file is then held to them (the plain users, the engine's,
    /// are not).
    pub fn with_acl_file(self, path: &std::path::Path) -> Result<Self, BrokerError> {
        let acl = Acl::read(path)?;
        let mut files = self.files_mut();
        files.acl = Some(Arc::new(acl));
        files.acl_path = Some(path.to_owned());
        drop(files);
        Ok(self)
    }

    /// Reads the password and ACL files again (on SIGHUP, as Mosquitto
    /// does). New connections get the new logins and rules; connected
    /// clients keep the rules they connected under. On any error nothing
    /// changes.
    pub fn reload(&self) -> Result<(), BrokerError> {
        let (password_path, acl_path) = {
            let files = self.files_read();
            (files.password_path.clone(), files.acl_path.clone())
        };
        let hashed = password_path.as_deref().map(read_passwords).transpose()?;
        let acl = acl_path.as_deref().map(Acl::read).transpose()?;
        let mut files = self.files_mut();
        if let Some(hashed) = hashed {
            files.hashed = hashed;
        }
        if let Some(acl) = acl {
            files.acl = Some(Arc::new(acl));
        }
        Ok(())
    }

    /// The topic rules now, when there are any.
    pub fn acl(&self) -> Option<Arc<Acl>> {
        self.files_read().acl.clone()
    }

    fn files_read(&self) -> std::sync::RwLockReadGuard<'_, Files> {
        self.files.read().unwrap_or_else(|e| e.into_inner())
    }

    fn files_mut(&self) -> std::sync::RwLockWriteGuard<'_, Files> {
        self.files.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `username` is a plain user (the engine's login): one the
    /// ACL does not restrict.
    pub fn is_plain(&self, username: &str) -> bool {
        self.plain.contains_key(username)
    }

    /// Whether `username` may log in with `password` as a plain user.
    pub fn check_plain(&self, username: &str, password: &str) -> bool {
        self.plain.get(username).is_some_and(|expected| {
            broker_files::same_secret(expected.expose().as_bytes(), password.as_bytes())
        })
    }

    /// Whether `username` may log in with `password`.
    pub fn check(&self, username: &str, password: &str) -> bool {
        if self.is_plain(username) {
            return self.check_plain(username, password);
        }
        let hash = self.files_read().hashed.get(username).cloned();
        hash.is_some_and(|hash| broker_files::verify_password(&hash, password))
    }
}

fn read_passwords(path: &std::path::Path) -> Result<HashMap<String, String>, BrokerError> {
    broker_files::read_password_file(path).map_err(|e| BrokerError::PasswordFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}
