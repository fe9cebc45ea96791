// PM2 ecosystem for member {{ member.slot }} of cluster {{ cluster.name }}, version {{ cluster.version }}, image {{ image.hash }}.
// Rendered at boot by haimg-init from /etc/haimg/templates/ecosystem.config.js;
// the name must end in .config.js or PM2 runs the file as the app. Every string
// is printed as a JavaScript string literal (haimg_model::quote::js).
module.exports = {
  apps: [
    {
      name: {{ webapp.name }},
      script: {{ webapp.script }},
      cwd: {{ webapp.cwd }},
      interpreter: {{ webapp.interpreter }},
      exec_mode: {{ webapp.exec_mode }},
      instances: {{ webapp.instances }},
      autorestart: true,
      exp_backoff_restart_delay: 100,
      max_memory_restart: "{{ webapp.max_memory_restart_mb }}M",
      kill_timeout: {{ webapp.kill_timeout_ms }},
      merge_logs: true,
      // Logs go to pm2-runtime's stdout (the console), not to files in PM2_HOME.
      out_file: "/dev/null",
      error_file: "/dev/null",
      env: {
{% for kv in webapp.env %}
        {{ kv[0] }}: {{ kv[1] }},
{% endfor %}
      },
    },
  ],
};
