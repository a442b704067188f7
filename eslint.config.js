import js from "@eslint/js";
import globals from "globals";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/", "node_modules/", "coverage/", "web/vendor/", "**/*.py"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ["**/*.ts"],
    languageOptions: {
      parserOptions: {
        projectService: { allowDefaultProject: ["vitest.config.ts", "eslint.config.js"] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
    },
  },
  // Node scripts: the CLI entry point, configs, fixtures and benchmarks written in plain JavaScript.
  {
    files: ["bin/**/*.js", "**/*.mjs", "*.config.js", "scripts/**/*.js", "bench/**/*.js"],
    languageOptions: { globals: globals.node },
  },
  // The dashboard runs in the browser and loads uPlot from a script tag.
  { files: ["web/**/*.js"], languageOptions: { globals: { ...globals.browser, uPlot: "readonly" } } },
);
