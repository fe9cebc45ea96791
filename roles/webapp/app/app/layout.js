export const metadata = {
  title: 'haimg webapp',
  description: 'Example app of the haimg HA cluster',
};

export default function RootLayout({ children }) {
  return (
    <html lang="en">
      <body style={{ fontFamily: 'system-ui, sans-serif', margin: '2rem' }}>{children}</body>
    </html>
  );
}
