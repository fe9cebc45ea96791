// PM2 ecosystem for {{ member.slot }} ({{ cluster.name }} {{ cluster.version }}, image {{ image.hash }}).
// Rendered at boot by haimg-init from /etc/haimg/templates/ecosystem.config.js;
// the name must end in .config.js or PM2 runs the file as the app.
module.exports = {
  apps: [
    {
      name: {{ webapp.name | tojson }},
      script: {{ webapp.script | tojson }},
      cwd: {{ webapp.cwd | tojson }},
      interpreter: {{ webapp.interpreter | tojson }},
      exec_mode: {{ webapp.exec_mode | tojson }},
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
        {{ kv[0] | tojson }}: {{ kv[1] | tojson }},
{% endfor %}
      },
    },
  ],
};
