//! Applying the plan's config edits to an image configuration, docker's way.

use crate::image::{config_empty, ImageConfig};
use crate::plan::ConfigEdit;

pub fn apply(image: &mut ImageConfig, edit: &ConfigEdit) {
    let c = &mut image.config;
    match edit {
        ConfigEdit::Entrypoint(ep) => {
            c.entrypoint = ep.clone();
            // Docker resets an inherited CMD when ENTRYPOINT is set.
            c.cmd = None;
        }
        ConfigEdit::Cmd(cmd) => c.cmd = cmd.clone(),
        ConfigEdit::Env(k, v) => c.env_set(k, v),
        ConfigEdit::WorkingDir(w) => c.working_dir = Some(w.clone()),
        ConfigEdit::User(u) => c.user = Some(u.clone()),
        ConfigEdit::Label(k, v) => {
            c.labels
                .get_or_insert_with(Default::default)
                .insert(k.clone(), v.clone());
        }
        ConfigEdit::ExposedPort(p) => {
            c.exposed_ports
                .get_or_insert_with(Default::default)
                .insert(p.clone(), config_empty());
        }
        ConfigEdit::Volume(v) => {
            c.volumes
                .get_or_insert_with(Default::default)
                .insert(v.clone(), config_empty());
        }
        ConfigEdit::StopSignal(s) => c.stop_signal = Some(s.clone()),
        ConfigEdit::Author(a) => image.author = Some(a.clone()),
        ConfigEdit::Shell(s) => c.shell = Some(s.clone()),
        ConfigEdit::OnBuild(t) => c.on_build.get_or_insert_with(Vec::new).push(t.clone()),
        ConfigEdit::Healthcheck(h) => c.healthcheck = h.clone(),
    }
}
